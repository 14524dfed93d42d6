"""Turns a batch of last-position logits into next tokens, one policy per row.

Sampled rows draw from their own torch.Generator, seeded per request, so a
seeded request gives the same tokens whatever else is in the batch.

Choosing happens on the logits' device without waiting for it: `sample` returns
`SampledTokens`, whose tokens can feed the next step on the device while their
host copy is still on its way (`to_host` waits for this step's work only).
"""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from lmdeploy_sdk import ops
from lmdeploy_sdk.guided.compiler import GrammarMatcher
from lmdeploy_sdk.guided.bitmask import BitmaskFiller, apply_bitmask
from lmdeploy_sdk.ops.transfer import to_device
from lmdeploy_sdk.messages import GenerationConfig


MIN_TEMPERATURE = 1e-5
# repetition_penalty is clamped here so penalised logits stay finite in float32
PENALTY_RANGE = (1e-6, 1e6)


@dataclass
class SamplingParams:
    """A request's sampling policy, resolved once when it is admitted."""

    greedy: bool
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repetition_penalty: float
    logprobs: int | None
    generator: torch.Generator | None
    banned_ids: list[int] = field(default_factory=list)
    # bad words longer than one token: the last token is banned after its prefix
    bad_sequences: list[list[int]] = field(default_factory=list)
    # banned until min_new_tokens tokens were generated
    min_new_tokens: int = 0
    end_ids: list[int] = field(default_factory=list)
    logit_bias: dict[int, float] = field(default_factory=dict)
    # the request's guided decoding: only tokens its grammar allows are chosen
    grammar: GrammarMatcher | None = None

    @property
    def needs_history(self) -> bool:
        """Whether choosing this row's next token depends on the tokens so far (their values or count)."""
        return bool(self.repetition_penalty != 1.0 or self.bad_sequences or self.min_new_tokens)

    @property
    def edits_logits(self) -> bool:
        """Whether this row needs a penalty, bias, ban or mask applied before choosing (most rows don't)."""
        return bool(self.banned_ids or self.logit_bias or self.grammar) or self.needs_history

    @classmethod
    def from_config(
        cls,
        cfg: GenerationConfig,
        bad_word_ids: list[list[int]],
        end_ids: list[int],
        device: torch.device,
        seed: int,
        grammar: GrammarMatcher | None = None,
    ) -> "SamplingParams":
        # Below this temperature sampling is argmax in all but name, and dividing by it overflows.
        greedy = cfg.greedy or cfg.temperature < MIN_TEMPERATURE
        gen = None
        if not greedy:
            gen = torch.Generator(device=device)
            gen.manual_seed(seed)
        banned = list(cfg.bad_token_ids or [])
        banned += [seq[0] for seq in bad_word_ids if len(seq) == 1]
        return cls(
            greedy=greedy,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            min_p=cfg.min_p,
            repetition_penalty=min(max(cfg.repetition_penalty, PENALTY_RANGE[0]), PENALTY_RANGE[1]),
            logprobs=cfg.logprobs,
            generator=gen,
            banned_ids=banned,
            bad_sequences=[seq for seq in bad_word_ids if len(seq) > 1],
            min_new_tokens=cfg.min_new_tokens or 0,
            end_ids=end_ids,
            logit_bias=dict(cfg.logit_bias or {}),
            grammar=grammar,
        )


@dataclass
class SamplingRow:
    params: SamplingParams
    token_ids: list[int]  # everything the sequence holds (prompt + generated), for penalties
    num_generated: int


def _row_bans(row: SamplingRow) -> list[int]:
    p = row.params
    bans = list(p.banned_ids)
    for seq in p.bad_sequences:
        prefix = seq[:-1]
        if row.token_ids[-len(prefix):] == prefix:
            bans.append(seq[-1])
    if row.num_generated < p.min_new_tokens:
        bans += p.end_ids
    return bans


def _apply_penalties(logits: torch.Tensor, rows: list[SamplingRow]) -> None:
    # logits: [S, V], modified in place
    vocab = logits.shape[1]
    dev = logits.device
    for i, row in enumerate(rows):
        if not row.params.edits_logits:
            continue
        pen = row.params.repetition_penalty
        if pen != 1.0 and row.token_ids:
            ids = to_device(sorted(t for t in set(row.token_ids) if 0 <= t < vocab), torch.int64, dev)
            seen = logits[i, ids]
            logits[i, ids] = torch.where(seen > 0, seen / pen, seen * pen)
        if row.params.logit_bias:
            ids = to_device(list(row.params.logit_bias), torch.int64, dev)
            logits[i].index_add_(0, ids, to_device(list(row.params.logit_bias.values()), logits.dtype, dev))
        bans = [t for t in _row_bans(row) if 0 <= t < vocab]
        if bans:
            logits[i].index_fill_(0, to_device(bans, torch.int64, dev), float("-inf"))


def _sample_rows(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    # logits: [S, V] for the rows that sample -> tokens [S] int64, on the device
    dev = logits.device
    temp = to_device([p.temperature for p in params], torch.float32, dev).unsqueeze(1)  # [S, 1]
    x = logits / temp
    sorted_x, order = x.sort(dim=-1, descending=True)  # [S, V]
    vocab = x.shape[1]
    ranks = torch.arange(vocab, device=dev).unsqueeze(0)  # [1, V]
    top_k = to_device([p.top_k if 0 < p.top_k < vocab else vocab for p in params], torch.int64, dev)
    mask = ranks >= top_k.unsqueeze(1)
    probs = torch.softmax(sorted_x.masked_fill(mask, float("-inf")), dim=-1)
    top_p = to_device([p.top_p for p in params], torch.float32, dev).unsqueeze(1)
    before = probs.cumsum(dim=-1) - probs  # mass strictly above each token
    mask |= (before > top_p) & (ranks > 0)
    min_p = to_device([p.min_p for p in params], torch.float32, dev).unsqueeze(1)
    mask |= (probs < min_p * probs[:, :1]) & (ranks > 0)
    probs = torch.softmax(sorted_x.masked_fill(mask, float("-inf")), dim=-1)
    broken = ~torch.isfinite(probs).all(dim=-1, keepdim=True)  # e.g. every token banned: argmax
    first = ranks == 0
    probs = torch.where(broken, first.to(probs.dtype), probs)
    picks = torch.cat([torch.multinomial(probs[i], 1, generator=p.generator) for i, p in enumerate(params)])
    return order.gather(1, picks.unsqueeze(1)).squeeze(1)  # [S]


class SampledTokens:
    """One step's chosen tokens (and requested logprobs) on the device, copied to the host in the background."""

    def __init__(self, tokens: torch.Tensor, logprob_rows: list[int], logprob_k: list[int],
                 top_values: torch.Tensor | None, top_ids: torch.Tensor | None, chosen: torch.Tensor | None):
        # tokens: [S]; top_values/top_ids: [W, K]; chosen: [W] logprob of the chosen token
        self.tokens = tokens
        self.num_rows = tokens.shape[0]
        self._logprob_rows, self._logprob_k = logprob_rows, logprob_k
        # One int64 buffer, so one copy brings everything: tokens [S], top ids [W*K], then
        # the chosen [W] and top [W*K] logprobs as float64 bit patterns.
        parts = [tokens] if top_values is None else [tokens, top_ids.flatten(), chosen.double().view(torch.int64),
                                                      top_values.double().view(torch.int64).flatten()]
        flat = torch.cat(parts) if len(parts) > 1 else tokens
        self._event = None
        if flat.device.type == "cuda":
            self._host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
            self._host.copy_(flat, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = flat
        self._width = 0 if top_ids is None else top_ids.shape[1]

    def to_host(self) -> tuple[list[int], list[dict[int, float] | None]]:
        """(token per row, {token: logprob} per row or None); waits for this step's work only."""
        if self._event is not None:
            self._event.synchronize()
        n, w, k = self.num_rows, len(self._logprob_rows), self._width
        tokens = self._host[:n].tolist()
        logprobs: list[dict[int, float] | None] = [None] * n
        if w:
            ids = self._host[n : n + w * k].view(w, k).tolist()
            chosen = self._host[n + w * k : n + w * k + w].view(torch.float64).tolist()
            values = self._host[n + w * k + w :].view(torch.float64).view(w, k).tolist()
            for j, (row, want) in enumerate(zip(self._logprob_rows, self._logprob_k)):
                entries = dict(zip(ids[j][:want], values[j][:want]))
                entries[tokens[row]] = chosen[j]
                logprobs[row] = entries
        return tokens, logprobs


@dataclass
class GrammarMasks:
    """The token masks of a step's rows that have a grammar, being filled on the host."""

    rows: list[int]
    mask: Future  # -> [G, W] int32 on the host, row g for rows[g]


class Sampler:
    def __init__(self) -> None:
        self._bitmasks: BitmaskFiller | None = None  # made on the first guided row

    def grammar_masks(self, rows: list[SamplingRow]) -> GrammarMasks | None:
        """Start filling the masks of the rows with a grammar (their grammars have seen every token
        so far); None when no row has one. A grammar that is done (complete or failed) masks nothing."""
        guided = [i for i, r in enumerate(rows) if r.params.grammar is not None and not r.params.grammar.done]
        if not guided:
            return None
        if self._bitmasks is None:
            self._bitmasks = BitmaskFiller()
        matchers = [rows[i].params.grammar for i in guided]
        return GrammarMasks(guided, self._bitmasks.fill_async(matchers, matchers[0].mask_words))

    def close(self) -> None:
        if self._bitmasks is not None:
            self._bitmasks.close()

    @torch.inference_mode()
    def sample(self, logits: torch.Tensor, rows: list[SamplingRow],
               masks: GrammarMasks | None = None) -> SampledTokens:
        # logits: [S, V] (the model's dtype) at each sampling sequence's last position.
        # Greedy rows take the argmax of the logits as they are (in float32 the order is the
        # same); penalties, biases, grammars, sampling and logprobs work on float32 copies.
        # masks: grammar_masks(rows) started earlier; else they are filled now.
        if any(r.params.edits_logits for r in rows):
            logits = logits.float()
            _apply_penalties(logits, rows)
            masks = masks or self.grammar_masks(rows)
            if masks is not None:
                index = to_device(masks.rows, torch.int64, logits.device)
                apply_bitmask(logits, index, masks.mask.result().to(logits.device, non_blocking=True))
        tokens = ops.argmax(logits)  # [S]; greedy rows keep theirs
        sampled = [i for i, r in enumerate(rows) if not r.params.greedy]
        if sampled:
            index = to_device(sampled, torch.int64, logits.device)
            picked = _sample_rows(logits.index_select(0, index).float(), [rows[i].params for i in sampled])
            tokens.index_copy_(0, index, picked)
        want = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
        if not want:
            return SampledTokens(tokens, [], [], None, None, None)
        ks = [rows[i].params.logprobs for i in want]
        index = to_device(want, torch.int64, logits.device)
        lp = torch.log_softmax(logits.index_select(0, index).float(), dim=-1)  # [W, V]
        top_values, top_ids = lp.topk(max(max(ks), 1), dim=-1)  # [W, K]
        chosen = lp.gather(1, tokens.index_select(0, index).unsqueeze(1)).squeeze(1)  # [W]
        return SampledTokens(tokens, want, ks, top_values, top_ids, chosen)

    def __call__(
        self, logits: torch.Tensor, rows: list[SamplingRow]
    ) -> tuple[list[int], list[dict[int, float] | None]]:
        return self.sample(logits, rows).to_host()
