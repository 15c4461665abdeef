"""Deployment tooling: complexity, ONNX export, TensorRT engines, latency benchmarks."""
