"""Load test for an OpenAI-compatible server: N streaming chat requests, C at a time; one JSON line of results.

    python scripts/serve_openai_api.py &
    python scripts/bench_serve.py --num_requests 64 --concurrency 16 --max_tokens 128

Every request streams with `ignore_eos` (so each produces exactly --max_tokens tokens, as vLLM's benchmark does;
pass --ignore_eos 0 for natural lengths) and `stream_options.include_usage` (token counts come from the server).
Reported: requests/s and output tokens/s over the whole run, time to first token (TTFT: request sent -> first
content or reasoning delta), inter-token latency (ITL: gap between successive streamed deltas of one request) and
end-to-end latency, each as p50 / p99 in milliseconds. Needs only the `openai`
package (no torch), so it can run on another machine than the server.

    python scripts/bench_serve.py --fairness --long_n 16 --long_tokens 2000

Fairness mode (issue 27): one greedy request with n = --long_n (the server's --max_batch_size: it fills every
row) and a --long_tokens budget with ignore_eos; once it streams, one short request; prints the short request's
time to first token. Before the fair scheduler the short one waited for the whole long request (no answer after
120 s on CPU); the target is under 2 s on CPU with a small model.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import asyncio
import contextlib
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
    fair = p.add_argument_group("fairness mode / 公平性测试").add_argument
    fair("--fairness", action="store_true",
         help="测一个占满批次的长请求运行时短请求的首字延迟 / time to first token of a short request sent while "
              "one request with n = --long_n rows and --long_tokens tokens fills the batch")
    fair("--long_n", type=int, default=16, help="choices of the long request; set to the server's --max_batch_size")
    fair("--long_tokens", type=int, default=2000, help="max_tokens of the long request (ignore_eos)")
    fair("--short_tokens", type=int, default=16, help="max_tokens of the short request")
    return p


def percentile(values: list, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def one_request(client, args, sem: asyncio.Semaphore) -> dict:
    async with sem:
        start = time.perf_counter()
        first, tokens, arrivals = None, 0, []
        extra = {"ignore_eos": True} if args.ignore_eos else {}
        stream = await client.chat.completions.create(
            model=args.model, messages=[{"role": "user", "content": args.prompt}], max_tokens=args.max_tokens,
            temperature=args.temperature, stream=True, stream_options={"include_usage": True}, extra_body=extra)
        async for chunk in stream:
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
            for c in chunk.choices:
                d = c.delta
                if d.content or getattr(d, "reasoning_content", None) or d.tool_calls:
                    arrivals.append(time.perf_counter())
                    first = first or arrivals[-1]
        end = time.perf_counter()
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]  # inter-token latency, per streamed delta
        return {"ttft": (first or end) - start, "latency": end - start, "tokens": tokens, "gaps": gaps}


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
    gaps = [g for r in ok for g in r["gaps"]]
    ms = lambda v: round(1000 * v, 1)  # noqa: E731
    return {"model": args.model, "requests": len(ok), "errors": len(errors), "concurrency": args.concurrency,
            "max_tokens": args.max_tokens, "duration_s": round(duration, 3),
            "requests_per_s": round(len(ok) / duration, 3), "output_tokens_per_s": round(out_tokens / duration, 1),
            "output_tokens": out_tokens,
            "ttft_ms_p50": ms(statistics.median(r["ttft"] for r in ok)),
            "ttft_ms_p99": ms(percentile([r["ttft"] for r in ok], 99)),
            "latency_ms_p50": ms(statistics.median(r["latency"] for r in ok)),
            "latency_ms_p99": ms(percentile([r["latency"] for r in ok], 99)),
            "itl_ms_p50": ms(statistics.median(gaps)) if gaps else None,
            "itl_ms_p99": ms(percentile(gaps, 99)) if gaps else None}


async def fairness(args) -> dict:
    """One long greedy request filling the batch, then a short one: the short one's TTFT and latency."""
    import httpx
    import openai
    client = openai.AsyncOpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=3600)
    messages = [{"role": "user", "content": args.prompt}]
    try:
        if args.model is None:
            args.model = (await client.models.list()).data[0].id
        long_tokens = 0

        async def long_request():
            nonlocal long_tokens
            stream = await client.chat.completions.create(
                model=args.model, messages=messages, n=args.long_n, max_tokens=args.long_tokens, temperature=0,
                stream=True, extra_body={"ignore_eos": True})
            async for chunk in stream:
                long_tokens += sum(1 for c in chunk.choices if c.delta.content)
        task = asyncio.create_task(long_request())
        # the batch is full once the server reports the long request running (its rows joined); /health, not the
        # stream, says so: a model may decode many tokens before they make a whole character to stream
        health = str(client.base_url).rstrip("/").removesuffix("/v1") + "/health"
        async with httpx.AsyncClient(timeout=30) as http:
            while not task.done() and (await http.get(health)).json().get("running_requests", 0) < 1:
                await asyncio.sleep(0.05)
        if task.done():
            task.result()  # raises the long request's error
            raise BenchError("the long request ended before the short one was sent; raise --long_tokens")
        sent = time.perf_counter()
        first = None
        stream = await client.chat.completions.create(model=args.model, messages=messages, temperature=0,
                                                      max_tokens=args.short_tokens, stream=True)
        async for chunk in stream:
            # first text, or the end: a model may stop (eos) before a whole character (an untrained one often does)
            if first is None and any(c.delta.content or c.finish_reason for c in chunk.choices):
                first = time.perf_counter()
        done = time.perf_counter()
        long_at_short_end = long_tokens
        task.cancel()  # hang up: the server stops decoding it
        with contextlib.suppress(asyncio.CancelledError, openai.APIError):
            await task
    except openai.APIConnectionError:
        raise BenchError(f"cannot reach {args.base_url}; start the server first: python scripts/serve_openai_api.py")
    finally:
        await client.close()
    return {"mode": "fairness", "model": args.model, "long_n": args.long_n, "long_max_tokens": args.long_tokens,
            "short_ttft_ms": round(1000 * ((first or done) - sent), 1),
            "short_latency_ms": round(1000 * (done - sent), 1),
            "long_tokens_streamed_when_short_done": long_at_short_end}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for name in ("num_requests", "concurrency", "max_tokens"):
            if getattr(args, name) < 1:
                raise BenchError(f"--{name} {getattr(args, name)}: must be at least 1")
        for name in ("long_n", "long_tokens", "short_tokens"):
            if getattr(args, name) < 1:
                raise BenchError(f"--{name} {getattr(args, name)}: must be at least 1")
        result = asyncio.run(fairness(args) if args.fairness else run(args))
        print(json.dumps(result, ensure_ascii=False), flush=True)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
