"""OpenAI request -> prompt token ids + one GenerationConfig per choice.

Shared by the HTTP server and the in-process OpenAI shim, so both accept and
reject exactly the same requests. Nothing here touches the engine: the caller
gets a `GenerationPlan` and runs it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol

import msgspec

from lmdeploy_sdk.messages import GenerationConfig
from lmdeploy_sdk.server.image_request import content_part_dict, encode_with_images, refuse_images
from lmdeploy_sdk.server.guided_request import (
    GrammarTokenizer, compile_response_format, logit_bias_ids, response_format_dict,
)
from lmdeploy_sdk.server.invalid_request import InvalidRequest
from lmdeploy_sdk.server.tool_request import tool_plan
from lmdeploy_sdk.tools import ToolFormat
from lmdeploy_sdk.server.schemas.chat import ChatCompletionRequest, ChatMessage
from lmdeploy_sdk.server.schemas.completions import CompletionRequest

SEED_MODULUS = 2**64
# Below this, sampling is argmax in all but name (and 1/T overflows float32 logits): decode greedily.
MIN_SAMPLING_TEMPERATURE = 1e-5


class PromptTokenizer(GrammarTokenizer, Protocol):
    max_token_bytes: int  # an upper bound on the text bytes one token covers
    chat_template: str | None  # the template in use (picks the tool-call format)

    def encode_prompt(
        self, prompt: str | list[dict], do_preprocess: bool = True, tools: list[dict] | None = None
    ) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...




@dataclass(frozen=True)
class GenerationPlan:
    """What one API request asks of the engine. Choice i continues prompts[prompt_of_choice[i]]."""

    prompts: list[list[int]]
    configs: list[GenerationConfig]
    prompt_of_choice: list[int]
    tool_format: ToolFormat | None = None  # chat answers are read for tool calls in this format
    # per prompt, the image features its tokens take (a vision-language model's chat), or None
    spans: list[list] | None = None

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)

    @property
    def num_choices(self) -> int:
        return len(self.configs)


def message_dicts(messages: list[ChatMessage] | str) -> list[dict[str, Any]]:
    """OpenAI messages as the chat template wants them ('developer' is a system turn; a
    plain string, as LMDeploy's server takes it, is one user turn)."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    out = []
    for m in messages:
        d: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role}
        if isinstance(m.content, list):
            d["content"] = [content_part_dict(p) for p in m.content]
        elif m.content is not msgspec.UNSET or m.tool_calls:
            d["content"] = None if m.content is msgspec.UNSET else m.content
        if m.name is not None:
            d["name"] = m.name
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        if m.tool_calls:
            d["tool_calls"] = [
                {"id": c.id, "type": c.type, "function": {"name": c.function.name,
                                                         "arguments": _json_or_str(c.function.arguments)}}
                for c in m.tool_calls
            ]
        out.append(d)
    return out


def _json_or_str(text: str) -> Any:
    """Templates index tool-call arguments as a mapping; keep non-JSON text as it is."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# Text normalization (e.g. NFC composing an accent) can shrink text; this covers it.
_NORMALIZATION_SLACK = 2


def check_text_fits(texts: Iterable[str], tokenizer: PromptTokenizer, session_len: int, param: str) -> None:
    """Refuse, before tokenizing, text that cannot fit in session_len tokens (a few megabytes
    would take seconds to tokenize only to be refused). Cheap: a str's length bounds its bytes."""
    limit = session_len * tokenizer.max_token_bytes * _NORMALIZATION_SLACK
    size = 0
    for text in texts:
        size += len(text)
        if size > limit:
            raise InvalidRequest(
                f"the prompt is longer than {limit} characters, more than this model's session_len "
                f"({session_len} tokens) can hold; shorten the prompt", param, "context_length_exceeded")


def message_texts(messages: list[ChatMessage] | list[dict[str, Any]] | str) -> Iterator[str]:
    """The text of every message (structs, dicts or LMDeploy's one-string form)."""
    if isinstance(messages, str):
        yield messages
        return
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else m.content
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                text = part.get("text") if isinstance(part, dict) else part.text
                if isinstance(text, str):
                    yield text


def check_prompt_length(ids: list[int], session_len: int, param: str) -> None:
    if len(ids) > session_len:
        raise InvalidRequest(
            f"the prompt has {len(ids)} tokens, more than this model's session_len ({session_len}); "
            "shorten the prompt",
            param,
            "context_length_exceeded",
        )


def _reject_unsupported(req: ChatCompletionRequest | CompletionRequest) -> None:
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(req, name)
        if value != 0:
            raise InvalidRequest(
                f"{name}={value} is not supported; use repetition_penalty instead", name, "unsupported_parameter"
            )


def build_config(**fields: Any) -> GenerationConfig:
    """GenerationConfig(**fields), sampling unless temperature is ~0; a bad value becomes InvalidRequest."""
    temperature = fields.get("temperature", 1.0)
    stop = fields.pop("stop", None)
    if isinstance(stop, bool):  # LMDeploy's legacy "stop": false / true: no stop strings
        stop = None
    try:
        return GenerationConfig(
            do_sample=temperature >= MIN_SAMPLING_TEMPERATURE,
            stop_words=[stop] if isinstance(stop, str) else (stop or None),
            **fields,
        )
    except ValueError as e:  # GenerationConfig names the field and value
        raise InvalidRequest(str(e), _field_of(str(e))) from e


def _choice_configs(
    req: ChatCompletionRequest | CompletionRequest, max_new_tokens: int, logprobs: int | None,
    response_format: dict[str, Any] | None = None,
) -> list[GenerationConfig]:
    """One config per choice; choice i gets seed + i so n seeded choices differ but repeat."""
    base = build_config(
        response_format=response_format,
        logit_bias=logit_bias_ids(req.logit_bias),
        max_new_tokens=max_new_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        min_p=req.min_p,
        repetition_penalty=req.repetition_penalty,
        ignore_eos=req.ignore_eos,
        skip_special_tokens=req.skip_special_tokens,
        min_new_tokens=req.min_new_tokens,
        stop=req.stop,
        logprobs=logprobs,
    )
    seed = req.seed
    return [base.replace(random_seed=fold_seed(seed, i)) for i in range(req.n)]


def fold_seed(seed: int | None, offset: int = 0) -> int | None:
    return None if seed is None else (seed + offset) % SEED_MODULUS


def _field_of(message: str) -> str | None:
    head = message.split("=", 1)[0]
    return "stop" if head == "stop_words" else (head if head.isidentifier() else None)


def chat_plan(req: ChatCompletionRequest, tokenizer: PromptTokenizer, session_len: int,
              vision: Any = None) -> GenerationPlan:
    """vision: the model's VisionModel (lmdeploy_sdk.vl), which image_url parts need."""
    _reject_unsupported(req)
    if req.top_logprobs is not None and not req.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs=true", "top_logprobs")
    check_text_fits(message_texts(req.messages), tokenizer, session_len, "messages")
    spans = None
    try:
        tools = tool_plan(req, message_dicts(req.messages), tokenizer.chat_template)
        if vision is not None:  # its processor renders and expands the prompt, images or not
            ids, found = encode_with_images(vision, tools.messages, session_len)
            spans = [found]
        else:
            refuse_images(tools.messages)
            ids = tokenizer.encode_prompt(tools.messages, do_preprocess=True, tools=tools.template_tools)
    except ValueError as e:
        if isinstance(e, InvalidRequest):
            raise
        raise InvalidRequest(str(e), "messages") from e
    check_prompt_length(ids, session_len, "messages")
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    max_new = limit if limit is not None else max(session_len - len(ids), 0)
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    response_format = tools.forced_format or response_format_dict(req.response_format)
    compile_response_format(response_format, tokenizer, "tools" if tools.forced_format else "response_format")
    configs = _choice_configs(req, max_new, logprobs, response_format)
    return GenerationPlan([ids], configs, [0] * len(configs), tools.format, spans)


def completion_prompts(prompt: str | list[Any]) -> list[str | list[int]]:
    """The prompts of a completions request: str, [str, ...], [id, ...] or [[id, ...], ...]."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise InvalidRequest("prompt must not be an empty list", "prompt")
    if all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if all(_is_ids(p) for p in prompt):
        return [list(prompt)]
    if all(isinstance(p, list) and p and all(_is_ids(t) for t in p) for p in prompt):
        return [list(p) for p in prompt]
    raise InvalidRequest(
        "prompt must be a str, a list of str, a list of token ids (ints >= 0) or a list of token-id lists",
        "prompt",
    )


def _is_ids(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def completion_plan(req: CompletionRequest, tokenizer: PromptTokenizer, session_len: int) -> GenerationPlan:
    _reject_unsupported(req)
    if req.suffix is not None:
        raise InvalidRequest("suffix is not supported", "suffix", "unsupported_parameter")
    if req.best_of is not None and req.best_of != req.n:
        raise InvalidRequest("best_of other than n is not supported", "best_of", "unsupported_parameter")
    if req.echo and req.logprobs is not None:
        raise InvalidRequest("echo with logprobs is not supported (no prompt logprobs)", "echo",
                             "unsupported_parameter")
    given = completion_prompts(req.prompt)
    for p in given:
        if isinstance(p, str):
            check_text_fits([p], tokenizer, session_len, "prompt")
    prompts = []
    for p in given:
        try:
            ids = p if isinstance(p, list) else tokenizer.encode_prompt(p, do_preprocess=False)
        except ValueError as e:
            raise InvalidRequest(str(e), "prompt") from e
        check_prompt_length(ids, session_len, "prompt")
        prompts.append(ids)
    longest = max(len(p) for p in prompts)
    max_new = req.max_tokens if req.max_tokens is not None else max(session_len - longest, 0)
    response_format = response_format_dict(req.response_format)
    compile_response_format(response_format, tokenizer, "response_format")
    per_prompt = _choice_configs(req, max_new, req.logprobs, response_format)
    configs = [c for _ in prompts for c in per_prompt]
    return GenerationPlan(prompts, configs, [i for i in range(len(prompts)) for _ in per_prompt])
