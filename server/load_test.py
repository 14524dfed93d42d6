"""Load test for a running API server: N concurrent streaming clients, TTFT / ITL / throughput percentiles.

    python -m lmdeploy_sdk.server.load_test --url http://127.0.0.1:23333 --concurrency 64 \\
        --requests 512 --prompt-words 256 --max-tokens 128 --json result.json

Each client sends its requests one after another (chat completions, streamed, with
ignore_eos so every answer has exactly --max-tokens tokens). TTFT is measured from
sending the request to the first content chunk, ITL between content chunks.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import httpx

PERCENTILES = (50, 90, 99)


@dataclass
class RequestResult:
    ok: bool
    ttft_s: float = 0.0
    e2e_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int = 0
    error: str = ""


@dataclass
class LoadConfig:
    url: str
    model: str | None
    concurrency: int
    requests: int
    prompt_words: int
    max_tokens: int
    api_key: str | None = None
    timeout_s: float = 600.0


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {f"p{p}": float("nan") for p in PERCENTILES} | {"mean": float("nan")}
    ordered = sorted(values)
    out = {f"p{p}": ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] for p in PERCENTILES}
    out["mean"] = statistics.fmean(ordered)
    return out


def _prompt(index: int, words: int) -> str:
    # distinct per request, so prefix caching does not flatter the numbers
    return f"Request {index}. " + " ".join(f"word{(index * 7 + i) % 997}" for i in range(words))


async def _one(http: httpx.AsyncClient, cfg: LoadConfig, model: str, index: int) -> RequestResult:
    body = {"model": model, "messages": [{"role": "user", "content": _prompt(index, cfg.prompt_words)}],
            "max_tokens": cfg.max_tokens, "stream": True, "stream_options": {"include_usage": True},
            "ignore_eos": True, "temperature": 0}
    start = time.perf_counter()
    result = RequestResult(ok=False)
    last = None
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                result.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return result
            async for line in resp.aiter_lines():
                if not line.startswith("data:") or line.endswith("[DONE]"):
                    continue
                chunk = json.loads(line[5:])
                if "error" in chunk:
                    result.error = chunk["error"]["message"]
                    return result
                now = time.perf_counter()
                if chunk.get("usage"):
                    result.output_tokens = chunk["usage"]["completion_tokens"]
                    result.prompt_tokens = chunk["usage"]["prompt_tokens"]
                if any(c["delta"].get("content") for c in chunk["choices"]):
                    if last is None:
                        result.ttft_s = now - start
                    else:
                        result.itl_s.append(now - last)
                    last = now
    except httpx.HTTPError as e:
        result.error = f"{type(e).__name__}: {e}"
        return result
    result.e2e_s = time.perf_counter() - start
    result.ok = last is not None
    return result


async def run_load(cfg: LoadConfig) -> dict:
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    limits = httpx.Limits(max_connections=cfg.concurrency + 4, max_keepalive_connections=cfg.concurrency + 4)
    async with httpx.AsyncClient(base_url=cfg.url.rstrip("/"), headers=headers, limits=limits,
                                 timeout=cfg.timeout_s) as http:
        model = cfg.model or (await http.get("/v1/models")).json()["data"][0]["id"]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(cfg.requests):
            queue.put_nowait(i)
        results: list[RequestResult] = []

        async def client() -> None:
            while not queue.empty():
                results.append(await _one(http, cfg, model, queue.get_nowait()))

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(cfg.concurrency)))
        wall = time.perf_counter() - start
    return summarize(cfg, model, results, wall)


def summarize(cfg: LoadConfig, model: str, results: list[RequestResult], wall_s: float) -> dict:
    ok = [r for r in results if r.ok]
    output_tokens = sum(r.output_tokens for r in ok)
    return {
        "config": asdict(cfg) | {"api_key": None, "model": model},
        "requests_ok": len(ok),
        "requests_failed": len(results) - len(ok),
        "errors": sorted({r.error for r in results if not r.ok})[:10],
        "wall_s": wall_s,
        "requests_per_s": len(ok) / wall_s if wall_s else 0.0,
        "output_tokens_per_s": output_tokens / wall_s if wall_s else 0.0,
        "prompt_tokens_mean": statistics.fmean([r.prompt_tokens for r in ok]) if ok else 0.0,
        "ttft_s": percentiles([r.ttft_s for r in ok]),
        "itl_s": percentiles([x for r in ok for x in r.itl_s]),
        "e2e_s": percentiles([r.e2e_s for r in ok]),
    }


def format_report(report: dict) -> str:
    cfg = report["config"]
    lines = [
        f"model {cfg['model']} at {cfg['url']}: {cfg['concurrency']} clients, {cfg['requests']} requests, "
        f"~{report['prompt_tokens_mean']:.0f} prompt tokens, {cfg['max_tokens']} output tokens each",
        f"ok {report['requests_ok']}, failed {report['requests_failed']}, wall {report['wall_s']:.2f} s, "
        f"{report['requests_per_s']:.2f} req/s, {report['output_tokens_per_s']:.1f} output tok/s",
        f"{'metric':<10}" + "".join(f"{k:>12}" for k in ("mean", *(f"p{p}" for p in PERCENTILES))),
    ]
    for name in ("ttft_s", "itl_s", "e2e_s"):
        row = report[name]
        lines.append(f"{name[:-2] + ' (ms)':<10}" + "".join(f"{row[k] * 1000:>12.1f}" for k in
                                                          ("mean", *(f"p{p}" for p in PERCENTILES))))
    for err in report["errors"]:
        lines.append(f"error: {err}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:23333")
    p.add_argument("--model", default=None, help="default: the server's first model")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--prompt-words", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--api-key", default=None)
    p.add_argument("--timeout", type=float, default=600.0, help="per request, seconds")
    p.add_argument("--json", default=None, help="also write the report here")
    a = p.parse_args(argv)
    for name in ("concurrency", "requests", "max_tokens"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    cfg = LoadConfig(a.url, a.model, a.concurrency, a.requests, a.prompt_words, a.max_tokens, a.api_key, a.timeout)
    report = asyncio.run(run_load(cfg))
    print(format_report(report))
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0 if report["requests_failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
