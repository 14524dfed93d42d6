"""Guided decoding: outputs that match a JSON schema, a regex or a grammar.

`response_format` -> `GrammarSpec` (spec.py) -> a per-request `GrammarMatcher` from the
model's `GrammarCompiler` (compiler.py, llguidance underneath, compiled grammars cached)
-> one token bitmask per step, filled on the host and applied to the logits just before
sampling (bitmask.py). docs/structured_output.md says why llguidance.
"""
# Only the light spec here: messages.py validates response_format without loading llguidance.
from lmdeploy_sdk.guided.spec import GrammarSpec, grammar_spec

__all__ = ["GrammarSpec", "grammar_spec"]
