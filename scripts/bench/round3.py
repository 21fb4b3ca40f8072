"""GPU speed, round 3 (issue 30): the measurements scripts/gpu_round3.sh runs, one JSON line per result.

Subcommands (scripts/bench_round3.py SUBCOMMAND --help):
  decode      the engine's default decode path in this process: first request latency, when the background compile
              switched in, tokens/s before and after, greedy equal to the eager engine (section a; run it twice with
              the same MINIMIND_COMPILE_CACHE for cold then warm)
  step        one training step (compiled fwd + bwd + AdamW) of our model vs MiniMind's own model at equal shapes,
              MFU against a measured bf16 peak, and the 512/8 attempts: loss variants, max-autotune, more tokens
              (section c)
  serve       the API server under scripts/bench_serve.py at 1/16/64 streams with 256-token prompts, then the
              engine's raw batch throughput at the same batch sizes (section d)
  upstream    tokens/s of MiniMind's own train_*.py from its log read with timestamps (section b)
  stamp       copy stdin to stdout, each line prefixed with seconds since start (for `upstream`)
  rl          rollout and training tokens/s from a PPO/SPO run's metrics file (section e)
  weights     write random weights of a preset as a .pth (server, MiniMind's SFT start point)

With --cpu_smoke sizes are tiny so every path runs on a CPU in seconds; the numbers then mean nothing.
"""
import argparse
import importlib.util
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch

from model.checkpoint import load_tokenizer
from model import engine as engine_mod
from model.engine import Engine, SamplingParams
from model.model_minimind import PRESETS, Attention, MiniMindConfig, MiniMindForCausalLM
from model.runtime import ROOT
from trainer.trainer_utils import flops_per_token, make_adamw

TINY = dict(hidden_size=64, num_hidden_layers=2)


def emit(**row) -> None:
    print(json.dumps(row, ensure_ascii=False), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def preset_config(name: str, smoke: bool) -> dict:
    return dict(TINY, use_moe=PRESETS[name].get("use_moe", False)) if smoke else dict(PRESETS[name])


def device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


# ------------------------------------------------------------------------------------------------ a) decode

def decode(args) -> None:
    """The default Engine (no arguments, no MINIMIND_DECODE): what eval_llm.py, the server and RL get."""
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    started = time.perf_counter()
    model = MiniMindForCausalLM(MiniMindConfig(**preset_config(args.preset, args.cpu_smoke))).to(device, dtype).eval()
    if args.backend:  # the CPU smoke: Dynamo + AOT tracing in seconds instead of Inductor's minutes on 2 cores
        engine_mod.DECODE_BACKEND = args.backend
    engine = Engine(model, **({"compile_decode": "background"} if args.background_on_cpu else {}))
    gen = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0, stop_ids=[])

    def request(batch: int) -> float:
        prompts = torch.randint(3, vocab, (batch, args.prompt_len), generator=gen).tolist()
        t = time.perf_counter()
        engine.generate(prompts, params)
        sync(device)
        return time.perf_counter() - t

    first_batch = args.batches[0]
    first = request(first_batch)
    ready_s = time.perf_counter() - started
    emit(bench="decode_first_request", preset=args.preset, label=args.label, batch=first_batch,
         new_tokens=args.new_tokens, first_request_s=round(first, 3),
         first_request_tokens_per_s=round(first_batch * args.new_tokens / first, 1),
         model_built_to_first_reply_s=round(ready_s, 2), device=device_label(device))
    # keep serving batch-1 requests until the background compile has switched in (or the budget is spent)
    before = []
    deadline = time.perf_counter() + args.switch_wait
    while engine.background is not None and time.perf_counter() < deadline:
        before.append(first_batch * args.new_tokens / request(first_batch))
        engine.take_compiled()
    if engine.background is not None and engine.background.done.is_set():
        engine.take_compiled()
    compiled = engine.compiled
    bg_seconds = engine.compile_seconds
    emit(bench="decode_switch", preset=args.preset, label=args.label, compiled=compiled,
         compile_s=None if bg_seconds is None else round(bg_seconds, 1),
         still_compiling=engine.background is not None, switch_wait_budget_s=args.switch_wait,
         requests_before_switch=len(before),
         tokens_per_s_before_switch=round(statistics.median(before), 1) if before else None)
    for batch in args.batches:
        request(batch)  # capture this batch bucket's graphs
        times = [request(batch) for _ in range(args.repeats)]
        emit(bench="decode_default", preset=args.preset, label=args.label, batch=batch, prompt_len=args.prompt_len,
             new_tokens=args.new_tokens, compiled=engine.compiled,
             tokens_per_s=round(batch * args.new_tokens / statistics.median(times), 1), device=device_label(device))
    prompts = torch.randint(3, vocab, (args.check_rows, 24), generator=gen).tolist()
    check = SamplingParams(max_new_tokens=32, temperature=0, stop_ids=[])
    got = [c.token_ids for c in engine.generate(prompts, check)]
    eager = Engine(model, cuda_graphs=False, compile_decode=False, sync_every=1, stack_projections=False)
    want = [c.token_ids for c in eager.generate(prompts, check)]
    emit(check="decode_default_equals_eager_greedy", preset=args.preset, label=args.label, compiled=engine.compiled,
         rows_equal=sum(a == b for a, b in zip(got, want)), rows=len(prompts))


# ------------------------------------------------------------------------------------------------ c) model step

def load_upstream_model(folder: Path):
    """MiniMind's own model_minimind.py from a copy of its repository, as a module of its own name (ours is
    `model.model_minimind`; both register the "minimind" model type with transformers, so registration errors
    are not ours to fix: the class is used directly)."""
    path = folder / "model" / "model_minimind.py"
    spec = importlib.util.spec_from_file_location("minimind_upstream_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_peak(device: torch.device, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def step_variant(args, device, peak, which: str, size: str, batch: int, seq: int, label: str,
                 loss: str = "logprobs", mode=None, upstream=None, gqa: bool = True) -> None:
    """Time compiled training steps of one model at one shape; one JSON line."""
    torch.manual_seed(0)
    Attention.sdpa_gqa = gqa
    cfg = preset_config(size, args.cpu_smoke)
    if which == "minimind":
        model = upstream.MiniMindForCausalLM(upstream.MiniMindConfig(**cfg)).to(device)
    else:
        model = MiniMindForCausalLM(MiniMindConfig(**cfg)).to(device)
        model.loss_impl = loss
    model.train()
    optimizer = make_adamw([{"params": [p for p in model.parameters() if p.requires_grad]}], 1e-4, device)
    if args.backend != "inductor":
        mode = None  # modes are Inductor's (the CPU smoke traces with aot_eager)
    compiled = torch.compile(model, backend=args.backend, **({"mode": mode} if mode else {})) if args.compile else model
    x = torch.randint(3, 6400, (batch, seq), device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def one():
        with amp:
            out = compiled(x, labels=x)
            loss_value = out.loss + (out.aux_loss if out.aux_loss is not None else 0)
        loss_value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss_value

    t0 = time.perf_counter()
    for _ in range(2):  # compile, then one more untimed step (allocator, cuBLAS heuristics)
        first_loss = float(one())
    sync(device)
    warm = time.perf_counter() - t0
    t = time.perf_counter()
    for _ in range(args.steps):
        one()
    sync(device)
    seconds = (time.perf_counter() - t) / args.steps
    tps = batch * seq / seconds
    fpt = flops_per_token(model, seq)  # the same formula for both models (equal shapes, equal parameters)
    emit(bench="model_step", model=which, preset=size, label=label, batch=batch, seq_len=seq, loss_impl=loss
         if which == "ours" else "cross_entropy (theirs)", compile_mode=mode or ("default" if args.compile else None),
         backend=args.backend if args.compile else None,
         tokens_per_s=round(tps, 1), step_ms=round(1000 * seconds, 2), first_two_steps_s=round(warm, 1),
         mfu_measured_peak_percent=round(100 * tps * fpt / peak, 2) if peak else None,
         sdpa_gqa=gqa if which == "ours" else None, loss_after_2_steps=round(first_loss, 4),
         device=device_label(device))
    Attention.sdpa_gqa = True
    del model, compiled, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()


def step(args) -> None:
    device = torch.device(args.device)
    peak = measure_peak(device, 8192 if device.type == "cuda" else 256) if device.type == "cuda" else None
    if peak:
        emit(bench="bf16_matmul_peak", tflops=round(peak / 1e12, 1), device=device_label(device))
    upstream = load_upstream_model(Path(args.upstream)) if args.upstream else None
    small_shape = (2, 64) if args.cpu_smoke else (128, 512)
    base_shape = (2, 48) if args.cpu_smoke else (32, 340)
    plan = []
    for size, (b, t) in (("small", small_shape), ("base", base_shape)):
        plan.append(("ours", size, b, t, "equal_shapes", {}))
        if upstream is not None:
            plan.append(("minimind", size, b, t, "equal_shapes", {}))
    b, t = small_shape
    plan += [("ours", "small", b, t, "attempt_cross_entropy", {"loss": "cross_entropy"}),
             ("ours", "small", b, t, "attempt_chunked_ce", {"loss": "chunked"}),
             ("ours", "small", 2 * b, t, "attempt_2x_tokens", {}),
             ("ours", "small", 2 * b, t, "attempt_2x_tokens_chunked_ce", {"loss": "chunked"}),
             ("ours", "small", b, t, "attempt_expanded_kv", {"gqa": False}),
             ("ours", "small", b, t, "attempt_max_autotune", {"mode": "max-autotune-no-cudagraphs"})]
    only = set(args.only or [])
    for which, size, b, t, label, kw in plan:
        if only and label not in only:
            continue
        try:
            step_variant(args, device, peak, which, size, b, t, label, upstream=upstream, **kw)
        except Exception as e:  # noqa: BLE001 -- one failed variant must not cost the others
            Attention.sdpa_gqa = True
            emit(bench="model_step", model=which, preset=size, label=label, error=f"{type(e).__name__}: {e}"[:500])
            if device.type == "cuda":
                torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ d) serve

def chat_prompt_ids(tokenizer, content: str) -> list:
    """Token ids of one user message in the chat template with the generation prompt (what the server decodes)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_of_tokens(tokenizer, n: int) -> str:
    """A user message whose chat-templated prompt is at most `n` tokens, within one sentence of it."""
    piece = "请用三句话说明一下小型语言模型在本地设备上运行时的优点和限制。"
    text = piece
    for _ in range(10 * n):
        if len(chat_prompt_ids(tokenizer, text + piece)) > n:
            break
        text += piece
    for ch in piece * 2:  # then character by character up to n
        if len(chat_prompt_ids(tokenizer, text + ch)) > n:
            break
        text += ch
    return text


def wait_for(url: str, seconds: float, proc: subprocess.Popen) -> dict:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {seconds} s")


def start_server(args, weights_dir: Path, hidden: int, layers: int, log_path: Path):
    """The API server on a free port with random weights of the preset; (process, base url)."""
    cmd = [sys.executable, str(ROOT / "scripts" / "serve_openai_api.py"), "--port", "0", "--save_dir", str(weights_dir),
           "--weight", "bench", "--hidden_size", str(hidden), "--num_hidden_layers", str(layers),
           "--max_batch_size", str(max(args.streams)), "--log_level", "warning", "--device", args.device]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    deadline = time.perf_counter() + args.server_start_s
    while time.perf_counter() < deadline:
        text = log_path.read_text(errors="replace")
        found = re.search(r"listening on (http://[^ ]+/v1)", text)
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {text[-1500:]}")
        time.sleep(0.2)
    raise TimeoutError(f"server printed no address in {args.server_start_s} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def serve(args) -> None:
    """bench_serve.py against the server per stream count, then the raw engine at the same batch sizes."""
    device = torch.device(args.device)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer()
    prompt = prompt_of_tokens(tokenizer, args.prompt_tokens)
    prompt_ids = chat_prompt_ids(tokenizer, prompt)
    for name in args.presets:
        cfg = preset_config(name, args.cpu_smoke)
        write_weights(work / f"bench_{cfg['hidden_size']}.pth", cfg)
        proc, base = start_server(args, work, cfg["hidden_size"], cfg["num_hidden_layers"],
                                  Path(args.log_dir or work) / f"server_{name}.log")
        try:
            health = wait_for(base.removesuffix("/v1") + "/health", args.server_start_s, proc)
            # the compiled decode step builds in the background; measure once it has switched in (or say it has not)
            deadline = time.perf_counter() + args.compile_wait
            while health.get("decode_compiling") and time.perf_counter() < deadline:
                subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_serve.py"), "--base_url", base,
                                "--num_requests", "2", "--concurrency", "1", "--max_tokens", "16", "--prompt", "你好"],
                               capture_output=True, timeout=120)
                health = wait_for(base.removesuffix("/v1") + "/health", 30, proc)
            emit(bench="serve_ready", preset=name, health=health, prompt_tokens=len(prompt_ids))
            for streams in args.streams:
                n = max(streams * args.requests_per_stream, streams)
                out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_serve.py"), "--base_url", base,
                                      "--num_requests", str(n), "--concurrency", str(streams), "--max_tokens",
                                      str(args.max_tokens), "--temperature", "0", "--prompt", prompt],
                                     capture_output=True, text=True, timeout=args.per_run_s)
                line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else None
                row = json.loads(line) if line else {"error": out.stderr[-800:]}
                emit(bench="serve", preset=name, streams=streams, prompt_tokens=len(prompt_ids), **row)
        finally:
            stop(proc)
        torch.manual_seed(0)
        model = MiniMindForCausalLM(MiniMindConfig(**cfg)).to(device, torch.bfloat16 if device.type == "cuda"
                                                                  else torch.float32).eval()
        engine = Engine(model, **({"compile_decode": "background"} if args.cpu_smoke else {}))
        engine.wait_compiled(args.compile_wait)
        params = SamplingParams(max_new_tokens=args.max_tokens, temperature=0, stop_ids=[])
        for streams in args.streams:
            engine.generate([prompt_ids] * streams, params)  # capture
            t = time.perf_counter()
            engine.generate([prompt_ids] * streams, params)
            sync(device)
            seconds = time.perf_counter() - t
            emit(bench="engine_raw", preset=name, batch=streams, prompt_tokens=len(prompt_ids),
                 new_tokens=args.max_tokens, compiled=engine.compiled,
                 tokens_per_s=round(streams * args.max_tokens / seconds, 1), device=device_label(device))
        del model, engine
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ b) upstream, e) rl

STEP_RE = re.compile(r"^([\d.]+) Epoch:\[(\d+)/(\d+)\]\((\d+)/(\d+)\)")


def upstream(args) -> None:
    """MiniMind's train_*.py has no tokens/s in its log: its step counter read with `stamp`'s timestamps gives
    micro-batches per second; x batch x max_seq_len (its rows are padded to that length) = positions per second."""
    lines = Path(args.log).read_text(errors="replace").splitlines()
    points = []  # (seconds, global micro-step)
    for line in lines:
        m = STEP_RE.match(line)
        if m:
            t, epoch, step, iters = float(m.group(1)), int(m.group(2)), int(m.group(4)), int(m.group(5))
            points.append((t, (epoch - 1) * iters + step))
    rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(points, points[1:]) if b[0] > a[0] and b[1] > a[1]]
    per_step = args.batch_size * args.max_seq_len
    emit(bench="e2e_upstream", stage=args.stage, rc=args.rc, batch_size=args.batch_size, max_seq_len=args.max_seq_len,
         accumulation_steps=args.accumulation_steps, log_lines=len(points),
         micro_steps=points[-1][1] if points else 0, rows_trained=(points[-1][1] * args.batch_size) if points else 0,
         rows_in_file=args.rows, first_log_line_s=round(points[0][0], 1) if points else None,
         steady_tokens_per_s=round(statistics.median(rates) * per_step, 1) if rates else None,
         tokens_per_s_per_window=[round(r * per_step) for r in rates])


def stamp(args) -> None:
    start = time.perf_counter()
    for line in sys.stdin:
        sys.stdout.write(f"{time.perf_counter() - start:.3f} {line}")
        sys.stdout.flush()


def rl(args) -> None:
    path = Path(args.metrics)
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    gen = [r["gen_tok_s"] for r in rows if "gen_tok_s" in r]
    train = [r["tokens_per_s"] for r in rows[1:] if r.get("tokens_per_s")]
    emit(bench="rl", stage=args.stage, rc=args.rc, steps=len(rows),
         first_gen_tok_s=round(gen[0], 1) if gen else None,
         median_gen_tok_s=round(statistics.median(gen[1:]), 1) if len(gen) > 1 else None,
         median_train_tokens_per_s=round(statistics.median(train), 1) if train else None,
         mean_resp_len=round(statistics.mean(r["resp_len"] for r in rows if "resp_len" in r), 1)
         if any("resp_len" in r for r in rows) else None)


def write_weights(path: Path, cfg: dict) -> None:
    """Random weights of `cfg` in the native format (fp16 state dict; no sidecar: the caller passes the sizes)."""
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(**cfg))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)


def weights(args) -> None:
    write_weights(Path(args.path), preset_config(args.preset, args.cpu_smoke))


# ------------------------------------------------------------------------------------------------ flags

def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cpu_smoke", action="store_true", help="tiny sizes: a plumbing check, the numbers mean nothing")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("decode", help="section a: the default decode path in this process")
    d.add_argument("--preset", choices=sorted(PRESETS), default="small")
    d.add_argument("--label", default="cold", help="cold / warm: which process of the pair this is")
    d.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    d.add_argument("--prompt_len", type=int, default=64)
    d.add_argument("--new_tokens", type=int, default=256)
    d.add_argument("--repeats", type=int, default=3, help="timed requests per batch size after the switch")
    d.add_argument("--switch_wait", type=float, default=120, help="seconds to keep serving until the switch-over")
    d.add_argument("--check_rows", type=int, default=16)
    d.add_argument("--background_on_cpu", action="store_true", help="CPU smoke: compile in the background anyway")
    d.add_argument("--backend", default=None, help="CPU smoke: torch.compile backend of the decode step (aot_eager)")

    s = sub.add_parser("step", help="section c: training step, ours vs MiniMind's model, and the MFU attempts")
    s.add_argument("--upstream", default=None, help="folder with MiniMind's repository copy (model/model_minimind.py)")
    s.add_argument("--steps", type=int, default=10)
    s.add_argument("--compile", type=int, default=1, choices=[0, 1])
    s.add_argument("--only", nargs="+", default=None, help="run only these labels")
    s.add_argument("--backend", default="inductor", help="torch.compile backend (the CPU smoke: aot_eager)")

    v = sub.add_parser("serve", help="section d: the API server under load, then the raw engine")
    v.add_argument("--presets", nargs="+", default=["small", "base"])
    v.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64])
    v.add_argument("--requests_per_stream", type=int, default=4)
    v.add_argument("--max_tokens", type=int, default=128)
    v.add_argument("--prompt_tokens", type=int, default=256)
    v.add_argument("--work", required=True, help="folder for the random weights (and the server logs)")
    v.add_argument("--log_dir", default=None, help="folder for the server logs (default: --work)")
    v.add_argument("--server_start_s", type=float, default=120)
    v.add_argument("--compile_wait", type=float, default=90)
    v.add_argument("--per_run_s", type=float, default=120)

    u = sub.add_parser("upstream", help="section b: tokens/s of MiniMind's script from its stamped log")
    u.add_argument("--log", required=True)
    u.add_argument("--stage", required=True)
    u.add_argument("--rc", type=int, default=0)
    u.add_argument("--rows", type=int, default=None)
    u.add_argument("--batch_size", type=int, required=True)
    u.add_argument("--accumulation_steps", type=int, default=1)
    u.add_argument("--max_seq_len", type=int, default=340)

    sub.add_parser("stamp", help="prefix each stdin line with seconds since start")

    r = sub.add_parser("rl", help="section e: summarise a PPO/SPO metrics file")
    r.add_argument("--metrics", required=True)
    r.add_argument("--stage", required=True)
    r.add_argument("--rc", type=int, default=0)

    w = sub.add_parser("weights", help="random weights of a preset as a .pth")
    w.add_argument("--preset", choices=sorted(PRESETS), default="small")
    w.add_argument("--path", required=True)
    return p


COMMANDS = {"decode": decode, "step": step, "serve": serve, "upstream": upstream, "stamp": stamp, "rl": rl,
            "weights": weights}


def run(args) -> None:
    COMMANDS[args.command](args)
