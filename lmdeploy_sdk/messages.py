"""User-facing config and result types (LMDeploy's `lmdeploy.messages` surface).

Configs validate at construction and name the offending field and value, so a
bad setting fails where it is written rather than deep inside the engine.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Literal

from lmdeploy_sdk.guided.spec import grammar_spec


def _check(cond: bool, field_name: str, value: Any, rule: str) -> None:
    if not cond:
        raise ValueError(f"{field_name}={value!r} is invalid: {rule}")


def _reject_unknown(cls: type, kwargs: dict) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise TypeError(
            f"{cls.__name__} got unknown field(s) {unknown}; valid fields: {sorted(names)}"
        )


def _strict(cls):
    """Make an unknown keyword fail with the list of valid fields (not a bare TypeError)."""
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        _reject_unknown(cls, kwargs)
        init(self, *args, **kwargs)

    __init__.__doc__ = init.__doc__
    __init__.__signature__ = inspect.signature(init)
    cls.__init__ = __init__
    return cls


@_strict
@dataclass
class GenerationConfig:
    n: int = 1
    max_new_tokens: int = 512
    do_sample: bool = False
    top_p: float = 1.0
    top_k: int = 50
    min_p: float = 0.0
    temperature: float = 0.8
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    random_seed: int | None = None
    stop_words: list[str] | None = None
    bad_words: list[str] | None = None
    stop_token_ids: list[int] | None = None
    bad_token_ids: list[int] | None = None
    min_new_tokens: int | None = None
    skip_special_tokens: bool = True
    logprobs: int | None = None
    response_format: dict | None = None
    include_stop_str_in_output: bool = False
    # OpenAI's logit_bias: token id -> a value in [-100, 100] added to its logit before sampling
    logit_bias: dict[int, float] | None = None

    def __post_init__(self):
        _check(isinstance(self.n, int) and self.n > 0, "n", self.n, "must be an int > 0")
        _check(
            isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 0,
            "max_new_tokens", self.max_new_tokens, "must be an int >= 0",
        )
        _check(0.0 <= self.top_p <= 1.0, "top_p", self.top_p, "must be in [0, 1]")
        _check(isinstance(self.top_k, int) and self.top_k >= 0, "top_k", self.top_k, "must be an int >= 0")
        _check(0.0 <= self.min_p <= 1.0, "min_p", self.min_p, "must be in [0, 1]")
        _check(0.0 <= self.temperature <= 2.0, "temperature", self.temperature, "must be in [0, 2]")
        _check(self.repetition_penalty > 0, "repetition_penalty", self.repetition_penalty, "must be > 0")
        if self.min_new_tokens is not None:
            _check(self.min_new_tokens >= 0, "min_new_tokens", self.min_new_tokens, "must be >= 0")
        if self.logprobs is not None:
            _check(0 <= self.logprobs <= 1024, "logprobs", self.logprobs, "must be in [0, 1024]")
        for name in ("stop_words", "bad_words"):
            v = getattr(self, name)
            if isinstance(v, str):
                setattr(self, name, [v])
            elif v is not None:
                _check(all(isinstance(s, str) and s for s in v), name, v, "must be non-empty strings")
        for name in ("stop_token_ids", "bad_token_ids"):
            v = getattr(self, name)
            if isinstance(v, int):
                setattr(self, name, [v])
            elif v is not None:
                _check(all(isinstance(t, int) and t >= 0 for t in v), name, v, "must be token ids >= 0")

        grammar_spec(self.response_format)  # ValueError now for a malformed response_format
        if self.logit_bias is not None:
            _check(isinstance(self.logit_bias, dict), "logit_bias", self.logit_bias, "must be a dict {token_id: bias}")
            for token, bias in self.logit_bias.items():
                _check(isinstance(token, int) and not isinstance(token, bool) and token >= 0, "logit_bias",
                       token, "keys must be token ids (ints >= 0)")
                _check(isinstance(bias, (int, float)) and -100 <= bias <= 100, "logit_bias", bias,
                       "values must be numbers in [-100, 100]")

    @property
    def greedy(self) -> bool:
        """Argmax decoding: do_sample=False (LMDeploy's default) or temperature 0."""
        return not self.do_sample or self.temperature == 0.0

    def replace(self, **changes) -> "GenerationConfig":
        _reject_unknown(GenerationConfig, changes)
        return dataclasses.replace(self, **changes)


@_strict
@dataclass
class TurbomindEngineConfig:
    dtype: str = "auto"
    model_format: str | None = None
    tp: int = 1
    session_len: int | None = None
    max_batch_size: int | None = None
    cache_max_entry_count: float = 0.8
    cache_block_seq_len: int = 64
    enable_prefix_caching: bool = False
    quant_policy: int = 0
    # another name for the KV cache bits (LMDeploy tutorials spell it so); folded into quant_policy
    kv_cache_quant_bit: int | None = None
    rope_scaling_factor: float = 0.0
    max_prefill_token_num: int = 8192
    device: str | None = None

    def __post_init__(self):
        _check(self.dtype in ("auto", "float16", "bfloat16", "float32"), "dtype", self.dtype,
               "must be 'auto', 'float16', 'bfloat16' or 'float32'")
        _check(self.model_format in (None, "hf", "awq", "gptq"), "model_format", self.model_format,
               "must be None (detect), 'hf', 'awq' or 'gptq' (4-bit weights)")
        _check(isinstance(self.tp, int) and self.tp >= 1, "tp", self.tp, "must be an int >= 1")
        if self.session_len is not None:
            _check(isinstance(self.session_len, int) and self.session_len > 0,
                   "session_len", self.session_len, "must be an int > 0")
        if self.max_batch_size is not None:
            _check(isinstance(self.max_batch_size, int) and self.max_batch_size > 0,
                   "max_batch_size", self.max_batch_size, "must be an int > 0")
        c = self.cache_max_entry_count
        _check(
            (isinstance(c, float) and 0.0 < c <= 1.0) or (isinstance(c, int) and not isinstance(c, bool) and c > 0),
            "cache_max_entry_count", c,
            "must be a float in (0, 1] (fraction of free memory) or an int > 0 (number of blocks)",
        )
        _check(isinstance(self.cache_block_seq_len, int) and self.cache_block_seq_len > 0,
               "cache_block_seq_len", self.cache_block_seq_len, "must be an int > 0")
        _check(self.quant_policy in (0, 4, 8), "quant_policy", self.quant_policy,
               "must be 0 (16-bit KV cache), 8 (int8 KV cache) or 4 (int4 KV cache)")
        self._fold_kv_cache_quant_bit()
        _check(self.rope_scaling_factor >= 0, "rope_scaling_factor", self.rope_scaling_factor, "must be >= 0")
        _check(isinstance(self.max_prefill_token_num, int) and self.max_prefill_token_num > 0,
               "max_prefill_token_num", self.max_prefill_token_num, "must be an int > 0")
        if self.device is not None:
            _check(self.device.split(":")[0] in ("cpu", "cuda"), "device", self.device,
                   "must be 'cpu', 'cuda' or 'cuda:N'")

    def _fold_kv_cache_quant_bit(self) -> None:
        """kv_cache_quant_bit names the same thing as quant_policy; a tutorial that sets both
        differently (e.g. quant_policy=4 meaning 4-bit weights) must not be misread."""
        bits = self.kv_cache_quant_bit
        if bits is None:
            return
        _check(bits in (0, 4, 8), "kv_cache_quant_bit", bits, "must be 0, 4 or 8 (bits of the KV cache)")
        if self.quant_policy == 0:
            self.quant_policy = bits
        elif bits != self.quant_policy:
            raise ValueError(
                f"quant_policy={self.quant_policy} and kv_cache_quant_bit={bits} disagree: both set the KV cache's "
                "bits (8 = int8, 4 = int4, 0 = 16-bit); set one of them. 4-bit weights are "
                "model_format='awq' (or 'gptq'), not a quant_policy"
            )


PytorchEngineConfig = TurbomindEngineConfig


@_strict
@dataclass
class ChatTemplateConfig:
    """How prompts are rendered. By default the tokenizer's own chat template.

    model_name: a label (kept for LMDeploy compatibility). meta_instruction (alias:
    system): the system prompt used when a conversation has none.
    chat_template: a Jinja template string that replaces the tokenizer's.
    """

    model_name: str = ""
    system: str | None = None
    meta_instruction: str | None = None
    chat_template: str | None = None

    @property
    def default_system(self) -> str | None:
        return self.meta_instruction if self.meta_instruction is not None else self.system


FinishReason = Literal["stop", "length", "error", "abort"]


@dataclass
class Response:
    text: str = ""
    generate_token_len: int = 0
    input_token_len: int = 0
    finish_reason: FinishReason | None = None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] | None = None
    index: int = 0
    cached_tokens: int = 0
    error_code: int | None = None
    error_message: str | None = None

    def __repr__(self) -> str:
        return (
            f"Response(text={self.text!r}, generate_token_len={self.generate_token_len}, "
            f"input_token_len={self.input_token_len}, finish_reason={self.finish_reason!r}, "
            f"index={self.index}, cached_tokens={self.cached_tokens})"
        )


__all__ = [
    "GenerationConfig",
    "TurbomindEngineConfig",
    "PytorchEngineConfig",
    "ChatTemplateConfig",
    "Response",
]
