"""One Session over ONNX Runtime and TensorRT; tokenisation, batching, benchmark, memory. (Not built yet.)"""
