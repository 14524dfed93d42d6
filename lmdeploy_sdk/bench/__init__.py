"""Benchmarks behind `lmdeploy-sdk bench`: latency, offline throughput, kernels."""
