"""Load test for an OpenAI-compatible server: N streaming chat requests, C at a time; one JSON line of results.

    python scripts/serve_openai_api.py &
    python scripts/bench_serve.py --num_requests 64 --concurrency 16 --max_tokens 128

Every request streams with `ignore_eos` (so each produces exactly --max_tokens tokens, as vLLM's benchmark does;
pass --ignore_eos 0 for natural lengths) and `stream_options.include_usage` (token counts come from the server).
Reported: requests/s and output tokens/s over the whole run, time to first token (TTFT: request sent -> first
content or reasoning delta) and end-to-end latency, each as p50 / p99 in milliseconds. Needs only the `openai`
package (no torch), so it can run on another machine than the server.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import asyncio
import json
import os
import statistics
import sys
import time


class BenchError(Exception):
    """Server unreachable, every request failed, or a bad flag: one message, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="API 服务压测 / benchmark an OpenAI-compatible chat server",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("--base_url", default="http://127.0.0.1:8998/v1", help="server URL including /v1")
    add("--model", default=None, help="model id; default: the first one the server lists")
    add("--api_key", default=os.environ.get("OPENAI_API_KEY") or "none", help="API key (default: $OPENAI_API_KEY)")
    add("--num_requests", type=int, default=64, help="requests in total")
    add("--concurrency", type=int, default=16, help="requests in flight at once")
    add("--max_tokens", type=int, default=128, help="tokens per reply")
    add("--ignore_eos", type=int, default=1, choices=[0, 1],
        help="1 = every reply is exactly --max_tokens long (vLLM's ignore_eos)")
    add("--temperature", type=float, default=0.85, help="sampling temperature")
    add("--prompt", default="请介绍一下你自己。", help="user message of every request")
    return p


def percentile(values: list, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def one_request(client, args, sem: asyncio.Semaphore) -> dict:
    async with sem:
        start = time.perf_counter()
        first, tokens = None, 0
        extra = {"ignore_eos": True} if args.ignore_eos else {}
        stream = await client.chat.completions.create(
            model=args.model, messages=[{"role": "user", "content": args.prompt}], max_tokens=args.max_tokens,
            temperature=args.temperature, stream=True, stream_options={"include_usage": True}, extra_body=extra)
        async for chunk in stream:
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
            for c in chunk.choices:
                d = c.delta
                if first is None and (d.content or getattr(d, "reasoning_content", None) or d.tool_calls):
                    first = time.perf_counter()
        end = time.perf_counter()
        return {"ttft": (first or end) - start, "latency": end - start, "tokens": tokens}


async def run(args) -> dict:
    import openai
    client = openai.AsyncOpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=3600)
    try:
        if args.model is None:
            models = await client.models.list()
            args.model = models.data[0].id
        sem = asyncio.Semaphore(args.concurrency)
        start = time.perf_counter()
        results = await asyncio.gather(*(one_request(client, args, sem) for _ in range(args.num_requests)),
                                       return_exceptions=True)
        duration = time.perf_counter() - start
    except openai.APIConnectionError:
        raise BenchError(f"cannot reach {args.base_url}; start the server first: python scripts/serve_openai_api.py")
    finally:
        await client.close()
    ok = [r for r in results if isinstance(r, dict)]
    errors = [r for r in results if not isinstance(r, dict)]
    if not ok:
        raise BenchError(f"all {len(errors)} requests failed; first error: {errors[0]!r}")
    if errors:
        print(f"warning: {len(errors)} of {len(results)} requests failed; first error: {errors[0]!r}",
              file=sys.stderr)
    out_tokens = sum(r["tokens"] for r in ok)
    ms = lambda v: round(1000 * v, 1)  # noqa: E731
    return {"model": args.model, "requests": len(ok), "errors": len(errors), "concurrency": args.concurrency,
            "max_tokens": args.max_tokens, "duration_s": round(duration, 3),
            "requests_per_s": round(len(ok) / duration, 3), "output_tokens_per_s": round(out_tokens / duration, 1),
            "output_tokens": out_tokens,
            "ttft_ms_p50": ms(statistics.median(r["ttft"] for r in ok)),
            "ttft_ms_p99": ms(percentile([r["ttft"] for r in ok], 99)),
            "latency_ms_p50": ms(statistics.median(r["latency"] for r in ok)),
            "latency_ms_p99": ms(percentile([r["latency"] for r in ok], 99))}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for name in ("num_requests", "concurrency", "max_tokens"):
            if getattr(args, name) < 1:
                raise BenchError(f"--{name} {getattr(args, name)}: must be at least 1")
        print(json.dumps(asyncio.run(run(args)), ensure_ascii=False), flush=True)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
