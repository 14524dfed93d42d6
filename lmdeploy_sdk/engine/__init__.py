"""The inference engine: sequences, KV blocks, scheduling, model runner and sampler.

Internal: the public surface is lmdeploy_sdk.Pipeline / AsyncEngine.
"""
