"""The model's tokenizer and chat template, as the engine and the public API use them.

Everything is delegated to `transformers.AutoTokenizer`; this class adds what
the engine needs around it: the full set of end ids, prompt validation with
useful errors, the chat-template override from `ChatTemplateConfig`, and
streaming detokenization.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lmdeploy_sdk.detokenizer import IncrementalDetokenizer
from lmdeploy_sdk.guided.compiler import GrammarCompiler
from lmdeploy_sdk.messages import ChatTemplateConfig

ROLES = ("system", "user", "assistant", "tool")

__all__ = ["Tokenizer", "IncrementalDetokenizer", "ROLES"]


def _config_eos_ids(path: Path) -> list[int]:
    """`eos_token_id` (int or list) of a config JSON file, or [] if absent."""
    if not path.is_file():
        return []
    config = json.loads(path.read_text(encoding="utf-8"))
    eos = config.get("eos_token_id")
    if eos is None and isinstance(config.get("text_config"), dict):  # multimodal configs nest it
        eos = config["text_config"].get("eos_token_id")
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else [int(i) for i in eos]


def _text_of(content: Any, index: int) -> str:
    """A message's content as one string; OpenAI content parts are joined."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError(
            f"message {index}: 'content' must be a str or a list of text parts, got {type(content).__name__}"
        )
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise ValueError(
                f"message {index}: content[{j}] must be {{'type': 'text', 'text': str}}, got {part!r}"
            )
        texts.append(part["text"])
    return "".join(texts)


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Validated copies of OpenAI-style messages with `content` as a str."""
    if not isinstance(messages, list):
        raise ValueError(f"messages must be a list of dicts, got {type(messages).__name__}")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"message {i} must be a dict, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"message {i}: 'role' must be one of {list(ROLES)}, got {role!r}")
        if "content" not in message:
            raise ValueError(f"message {i}: 'content' is missing")
        content = message["content"]
        if content is None:
            content = ""  # OpenAI's schema lets content be null (e.g. a turn that only calls tools)
        out.append({**message, "content": _text_of(content, i)})
    return out


class Tokenizer:
    """A model directory's tokenizer: encoding, chat template, end ids, streaming decode."""

    def __init__(self, model_dir: str | Path, chat_template_config: ChatTemplateConfig | None = None) -> None:
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"model directory {str(model_dir)!r} does not exist")
        try:
            self.hf: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(self.model_dir)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load a tokenizer from {str(self.model_dir)!r}: {e}") from e
        self.chat_template_config = chat_template_config or ChatTemplateConfig()
        self.vocab_size: int = len(self.hf)
        self.bos_token_id: int | None = self.hf.bos_token_id
        eos = [] if self.hf.eos_token_id is None else [self.hf.eos_token_id]
        eos += _config_eos_ids(self.model_dir / "generation_config.json")
        eos += _config_eos_ids(self.model_dir / "config.json")
        self.eos_token_ids: list[int] = list(dict.fromkeys(eos))

    @functools.cached_property
    def max_token_bytes(self) -> int:
        """An upper bound on the text bytes one token stands for: a text with more than
        `n * max_token_bytes` bytes cannot fit in n tokens, which is known before tokenizing it.
        (Vocabulary strings are byte-level or SentencePiece forms, never shorter than their text.)"""
        return max(len(t.encode("utf-8")) for t in self.hf.get_vocab())

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template in use: the configured one, else the tokenizer's own."""
        return self.chat_template_config.chat_template or self.hf.chat_template

    @functools.cached_property
    def grammars(self) -> GrammarCompiler:
        """Compiles response formats against this vocabulary (guided decoding); caches them."""
        return GrammarCompiler(self.hf, self.eos_token_ids)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text to encode must be a str, got {type(text).__name__}")
        return self.hf.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Ids -> text, exactly as the streaming detokenizer joins up (no space clean-up)."""
        return self.hf.decode(
            list(ids), skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False
        )

    def apply_chat_template(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        tools: list[dict] | None = None,
    ) -> str:
        """Render a conversation as prompt text with the configured or the tokenizer's own template."""
        conversation = normalize_messages(messages)
        system = self.chat_template_config.default_system
        if system is not None and not any(m["role"] == "system" for m in conversation):
            conversation.insert(0, {"role": "system", "content": system})
        template = self.chat_template
        if not template:
            raise ValueError(
                f"the tokenizer in {str(self.model_dir)!r} has no chat template; pass one with "
                "chat_template_config=ChatTemplateConfig(chat_template='<jinja template>'), "
                "or send a plain str prompt with do_preprocess=False"
            )
        return self.hf.apply_chat_template(
            conversation,
            tools=tools,
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )

    def encode_prompt(
        self, prompt: str | list[dict], do_preprocess: bool = True, tools: list[dict] | None = None
    ) -> list[int]:
        """Prompt ids: chat-templated for messages (and for a str when do_preprocess), else raw."""
        if isinstance(prompt, (str, list)) and len(prompt) == 0:
            raise ValueError("empty prompt")
        if isinstance(prompt, str) and not do_preprocess:
            return self.encode(prompt, add_special_tokens=True)
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        elif not isinstance(prompt, list):
            raise ValueError(f"prompt must be a str or a list of message dicts, got {type(prompt).__name__}")
        text = self.apply_chat_template(prompt, add_generation_prompt=True, tools=tools)
        # The template writes BOS itself where the model wants one.
        return self.encode(text, add_special_tokens=False)

    def bad_word_sequences(self, words: list[str]) -> list[list[int]]:
        """The token sequence of each word, for banning it during sampling."""
        for w in words:
            if not isinstance(w, str) or not w:
                raise ValueError(f"bad word {w!r} must be a non-empty str")
        return [self.encode(w, add_special_tokens=False) for w in words]

    def detokenizer(self, skip_special_tokens: bool = True) -> IncrementalDetokenizer:
        """A fresh streaming decoder for one generated sequence."""
        return IncrementalDetokenizer(self.hf, skip_special_tokens)
