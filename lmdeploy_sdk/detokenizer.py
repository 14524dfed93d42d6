"""Streaming token ids -> text, one step per generated token.

Decoding the whole sequence at every step is O(length) per token; instead each
step decodes a short window (vLLM's prefix/read offsets): the tokens of the
previous emission, kept only as context, plus the new tokens. The new text is
the window's text beyond the context's. The context matters because decoders
are not token-local: sentencepiece drops the leading space of the first token,
and byte-level BPE splits one UTF-8 character over several tokens.

With a fast (Rust) tokenizer, steps go through `tokenizers.decoders.DecodeStream`,
the same window logic in Rust: one call per token instead of two Python-level
decodes, which matters at thousands of tokens per second. The Python window stays
for the held-back tail at the end and for tokenizers without a Rust backend.
"""
from __future__ import annotations

from collections.abc import Sequence

import tokenizers
from transformers import PreTrainedTokenizerBase

try:
    from tokenizers.decoders import DecodeStream
except ImportError:  # tokenizers < 0.21
    DecodeStream = None

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Turns a stream of token ids into text pieces that join to `decode(all ids)`.

    Nothing is emitted while the new tokens add no text or their text ends in
    U+FFFD: the bytes of a multi-byte character may be completed by the next
    token. So the context always holds text-bearing tokens, and a token after a
    skipped special token is not mistaken for the first one (sentencepiece would
    drop its leading space).
    """

    def __init__(self, hf: PreTrainedTokenizerBase, skip_special_tokens: bool = True) -> None:
        self._hf = hf
        self._skip_special_tokens = skip_special_tokens
        # The window: ids of the last emission (context, already emitted) then ids not yet emitted.
        self._ids: list[int] = []
        self._context_len = 0
        backend = getattr(hf, "backend_tokenizer", None)
        self._rust = backend if DecodeStream is not None and isinstance(backend, tokenizers.Tokenizer) else None
        self._stream = DecodeStream(skip_special_tokens=skip_special_tokens) if self._rust else None

    def step(self, new_ids: Sequence[int]) -> str:
        """Add generated ids; return the text they made final ("" while a character is incomplete)."""
        if not new_ids:
            return ""
        if self._stream is None:
            self._ids.extend(new_ids)
            return self._advance(final=False)
        pieces = []
        for token in new_ids:
            self._ids.append(token)
            piece = self._stream.step(self._rust, token)
            if piece:  # the window's new tokens were emitted: they are the next context
                pieces.append(piece)
                del self._ids[: self._context_len]
                self._context_len = len(self._ids)
        return "".join(pieces)

    def flush(self) -> str:
        """At the end of generation: the held-back text (an invalid byte tail reads as U+FFFD)."""
        if self._context_len == len(self._ids):
            return ""
        return self._advance(final=True)

    def _decode(self, ids: list[int]) -> str:
        # No clean-up of tokenization spaces: it is not local to a window, so
        # streamed text could disagree with one-shot decoding.
        return self._hf.decode(
            ids, skip_special_tokens=self._skip_special_tokens, clean_up_tokenization_spaces=False
        )

    def _advance(self, final: bool) -> str:
        context_text = self._decode(self._ids[: self._context_len])
        window_text = self._decode(self._ids)
        if not final and (len(window_text) <= len(context_text) or window_text.endswith(REPLACEMENT_CHAR)):
            return ""
        # The newly emitted ids become the next step's context.
        del self._ids[: self._context_len]
        self._context_len = len(self._ids)
        return window_text[len(context_text) :]
