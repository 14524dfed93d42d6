"""The `lmdeploy-sdk` command line (also `python -m lmdeploy_sdk`)."""
