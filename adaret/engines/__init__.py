"""TensorRT engines for datacenter GPUs and Jetson, and the TensorRT-readiness lint. (Not built yet.)"""
