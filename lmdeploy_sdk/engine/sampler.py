"""Turns a batch of last-position logits into next tokens, one policy per row.

Sampled rows draw from their own torch.Generator, seeded per request, so a
seeded request gives the same tokens whatever else is in the batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

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

    @classmethod
    def from_config(
        cls,
        cfg: GenerationConfig,
        bad_word_ids: list[list[int]],
        end_ids: list[int],
        device: torch.device,
        seed: int,
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
    for i, row in enumerate(rows):
        pen = row.params.repetition_penalty
        if pen != 1.0 and row.token_ids:
            ids = torch.tensor(sorted(set(row.token_ids)), device=logits.device)
            ids = ids[ids < vocab]
            seen = logits[i, ids]
            logits[i, ids] = torch.where(seen > 0, seen / pen, seen * pen)
        bans = [t for t in _row_bans(row) if t < vocab]
        if bans:
            logits[i, bans] = float("-inf")


def _sample_rows(logits: torch.Tensor, params: list[SamplingParams]) -> list[int]:
    # logits: [S, V] for the rows that sample
    dev = logits.device
    temp = torch.tensor([p.temperature for p in params], device=dev).unsqueeze(1)  # [S, 1]
    x = logits / temp
    sorted_x, order = x.sort(dim=-1, descending=True)  # [S, V]
    vocab = x.shape[1]
    ranks = torch.arange(vocab, device=dev).unsqueeze(0)  # [1, V]
    top_k = torch.tensor([p.top_k if 0 < p.top_k < vocab else vocab for p in params], device=dev)
    mask = ranks >= top_k.unsqueeze(1)
    probs = torch.softmax(sorted_x.masked_fill(mask, float("-inf")), dim=-1)
    top_p = torch.tensor([p.top_p for p in params], device=dev).unsqueeze(1)
    before = probs.cumsum(dim=-1) - probs  # mass strictly above each token
    mask |= (before > top_p) & (ranks > 0)
    min_p = torch.tensor([p.min_p for p in params], device=dev).unsqueeze(1)
    mask |= (probs < min_p * probs[:, :1]) & (ranks > 0)
    probs = torch.softmax(sorted_x.masked_fill(mask, float("-inf")), dim=-1)
    broken = ~torch.isfinite(probs).all(dim=-1)  # e.g. every token banned: fall back to argmax
    probs[broken] = 0.0
    probs[broken, 0] = 1.0
    out = []
    for i, p in enumerate(params):
        pick = torch.multinomial(probs[i], 1, generator=p.generator)
        out.append(int(order[i, pick]))
    return out


def _top_logprobs(logprobs: torch.Tensor, token: int, k: int) -> dict[int, float]:
    # logprobs: [V]
    entries = {}
    if k > 0:
        vals, ids = logprobs.topk(k)
        entries = dict(zip(ids.tolist(), vals.tolist()))
    entries[token] = float(logprobs[token])
    return entries


class Sampler:
    @torch.inference_mode()
    def __call__(
        self, logits: torch.Tensor, rows: list[SamplingRow]
    ) -> tuple[list[int], list[dict[int, float] | None]]:
        # logits: [S, V] float32 at each sampling sequence's last position
        logits = logits.float()
        _apply_penalties(logits, rows)
        tokens = [0] * len(rows)
        greedy = [i for i, r in enumerate(rows) if r.params.greedy]
        if greedy:
            picked = logits[greedy].argmax(dim=-1).tolist()
            for i, t in zip(greedy, picked):
                tokens[i] = t
        sampled = [i for i, r in enumerate(rows) if not r.params.greedy]
        if sampled:
            picked = _sample_rows(logits[sampled], [rows[i].params for i in sampled])
            for i, t in zip(sampled, picked):
                tokens[i] = t
        logprobs: list[dict[int, float] | None] = [None] * len(rows)
        want = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
        if want:
            lp = torch.log_softmax(logits[want], dim=-1)
            for j, i in enumerate(want):
                logprobs[i] = _top_logprobs(lp[j], tokens[i], rows[i].params.logprobs)
        return tokens, logprobs
