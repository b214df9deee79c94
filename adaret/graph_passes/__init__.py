"""ONNX graph passes over onnx-ir that fold, fuse and prune the retained path. (Not built yet.)"""
