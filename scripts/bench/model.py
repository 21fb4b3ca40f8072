"""Model and generation benchmark: one JSON line per result, never a pass/fail test.

Measures, on the present device (or --device):
  * forward+backward training throughput (tokens/s) of a preset with synthetic tokens, MoE grouped GEMM vs loop;
  * decoding throughput of the shared Engine with CUDA graphs over the torch.compile'd decode step
    (MINIMIND_DECODE=compile), with CUDA graphs alone (MINIMIND_DECODE=graphs), the Engine's eager path
    (MINIMIND_DECODE=eager: no graphs, a host read per token) and transformers' `model.generate()`;
  * correctness checks in the device's dtype: engine greedy == HF greedy, grouped MoE == looped MoE.

scripts/bench_model.py is the command; sizes are model.model_minimind.PRESETS.
"""
import argparse
import json
import time

import torch

from model.engine import Engine, SamplingParams
from model.model_minimind import PRESETS, MiniMindConfig, MiniMindForCausalLM, count_parameters


def emit(**row):
    print(json.dumps(row), flush=True)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup=2, iters=5):
    """Seconds per call, averaged over `iters` after `warmup` untimed calls (the first calls pay for cuBLAS
    heuristics, allocator growth and, with torch.compile, compilation); the device is synchronised around."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def bench_train(model, device, dtype, batch, seq, grouped):
    for layer in model.model.layers:
        if hasattr(layer.mlp, "use_grouped_mm"):
            layer.mlp.use_grouped_mm = grouped
    model.train()
    x = torch.randint(3, model.config.vocab_size, (batch, seq), device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = model(x, labels=x)
            (out.loss + out.aux_loss).backward()
        model.zero_grad(set_to_none=True)

    seconds = timed(step, device)
    return batch * seq / seconds


COLUMNS = ("engine_compiled", "engine_graphs", "engine_eager", "hf_generate")


def bench_decode(model, device, batch, prompt_len, new_tokens, unstacked=False, columns=COLUMNS):
    """tokens/s of the engine with CUDA graphs over the compiled step, with graphs alone (the default on CUDA), the
    engine's eager path, and HF generate; `unstacked`: also both graph engines without StackedProjections."""
    model.eval()
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0, stop_ids=[])
    calls = iter(range(1000))

    def fresh_prompts():  # a new prompt length per call, so kernels meet KV lengths they have not seen (as in chat)
        n = prompt_len + next(calls)
        return torch.randint(3, model.config.vocab_size, (batch, n), device=device)

    result = {}
    engines = (("engine_compiled", dict(cuda_graphs=True, compile_decode=True)),
               ("engine_graphs", dict(cuda_graphs=True, compile_decode=False)),
               ("engine_eager", dict(cuda_graphs=False, compile_decode=False, sync_every=1,
                                     stack_projections=False)))
    if unstacked:
        engines += tuple((f"{name}_unstacked", dict(kw, stack_projections=False)) for name, kw in engines[:2])
    for name, kw in engines:
        if name != "engine_eager" and device.type != "cuda" or name.replace("_unstacked", "") not in columns:
            continue
        engine = Engine(model, **kw)
        run = lambda: engine.generate(fresh_prompts().tolist(), params)  # noqa: E731
        if name.startswith("engine_compiled"):  # compiling and capturing, apart from the steady speed
            start = time.perf_counter()
            run()
            sync(device)
            result[f"{name}_first_call_s"] = time.perf_counter() - start
        result[name] = batch * new_tokens / timed(run, device, warmup=1, iters=3)
    if "hf_generate" not in columns:
        return result
    result["hf_generate"] = batch * new_tokens / timed(
        lambda: model.generate(fresh_prompts(), max_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                               pad_token_id=0, min_new_tokens=new_tokens), device, warmup=1, iters=3)
    return result


@torch.inference_mode()
def check(model, device, variants=False):
    """Equalities that the CPU tests prove in fp32, re-checked in the device's dtype; `variants`: also the
    compiled and graphs-only engines against eager (on CUDA; each compile costs about a minute)."""
    model.eval()
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [20, 21, 22, 23, 24]]
    params = SamplingParams(max_new_tokens=16, temperature=0, stop_ids=[])
    default = Engine(model, compile_decode=None if variants else False)
    got = [c.token_ids for c in default.generate(prompts, params)]
    eager = [c.token_ids for c in Engine(model, cuda_graphs=False, compile_decode=False, sync_every=1)
             .generate(prompts, params)]
    emit(check="engine_default_equals_eager_greedy", rows_equal=sum(a == b for a, b in zip(got, eager)),
         rows=len(prompts), graphs=device.type == "cuda")
    if default.background is not None:  # the default's background compile: finish it here, not during the timings
        compiled = default.wait_compiled(900)
        got = [c.token_ids for c in default.generate(prompts, params)]
        emit(check="engine_default_after_background_compile_equals_eager_greedy", compiled=compiled,
             compile_s=default.compile_seconds, rows_equal=sum(a == b for a, b in zip(got, eager)), rows=len(prompts))
    if device.type == "cuda" and variants:
        for compiled, stacked in ((True, True), (False, True), (False, False)):
            other = [c.token_ids for c in Engine(model, cuda_graphs=True, compile_decode=compiled,
                                                 stack_projections=stacked).generate(prompts, params)]
            emit(check=f"engine_{'compiled' if compiled else 'graphs'}{'' if stacked else '_unstacked'}"
                       f"_equals_eager_greedy", rows_equal=sum(a == b for a, b in zip(other, eager)), rows=len(prompts))
    same = 0
    for p, g in zip(prompts, got):
        hf = model.generate(torch.tensor([p], device=device), max_new_tokens=16, do_sample=False,
                            eos_token_id=None, pad_token_id=0)[0, len(p):].tolist()
        same += hf == g
    emit(check="engine_greedy_equals_hf_generate", rows_equal=same, rows=len(prompts))
    if model.config.use_moe:
        x = torch.randint(3, model.config.vocab_size, (2, 64), device=device)
        outs = []
        for grouped in (True, False):
            for layer in model.model.layers:
                layer.mlp.use_grouped_mm = grouped
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                outs.append(model(x).logits.float())
        emit(check="moe_grouped_equals_loop", max_abs_diff=(outs[0] - outs[1]).abs().max().item())


def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), nargs="+", default=["tiny"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=16, help="training micro-batch (sequences)")
    parser.add_argument("--seq_len", type=int, default=512, help="training sequence length (tokens)")
    parser.add_argument("--decode_batches", type=int, nargs="+", default=[1, 16, 64], help="decode batch sizes")
    parser.add_argument("--new_tokens", type=int, default=128, help="tokens generated per row")
    parser.add_argument("--skip_train", action="store_true", help="decoding only")
    parser.add_argument("--columns", nargs="+", choices=COLUMNS, default=list(COLUMNS),
                        help="which decoders to time (default: all four)")
    parser.add_argument("--default_check_only", action="store_true",
                        help="bf16 checks of the default engine only, not of each variant (each compile costs minutes)")
    parser.add_argument("--unstacked", action="store_true",
                        help="also decode without stacked q/k/v and gate/up matmuls (what StackedProjections buys)")
    return parser


def run(args) -> None:
    """Every requested preset: checks, training throughput (unless --skip_train), decoding per batch size."""
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for name in args.preset:
        torch.manual_seed(0)
        model = MiniMindForCausalLM(MiniMindConfig(**PRESETS[name])).to(device)
        params = count_parameters(model)
        check(model, device)
        for grouped in () if args.skip_train else (True, False) if model.config.use_moe else (True,):
            tps = bench_train(model, device, dtype, args.batch_size, args.seq_len, grouped)
            emit(bench="train_fwd_bwd", preset=name, params=params, device=str(device), dtype=str(dtype),
                 batch=args.batch_size, seq_len=args.seq_len, moe_grouped_mm=grouped if model.config.use_moe else None,
                 tokens_per_s=round(tps, 1))
        eval_model = model.to(dtype)
        # again in the decode dtype (bf16 on CUDA), graphs against eager
        check(eval_model, device, variants=not args.default_check_only)
        for batch in args.decode_batches:
            tps = bench_decode(eval_model, device, batch, 64, args.new_tokens, args.unstacked, args.columns)
            first = tps.pop("engine_compiled_first_call_s", None)
            first_unstacked = tps.pop("engine_compiled_unstacked_first_call_s", None)
            fastest = max(v for k, v in tps.items() if k != "hf_generate")
            hf = tps.get("hf_generate")
            emit(bench="decode", preset=name, device=str(device), dtype=str(dtype), batch=batch, prompt_len=64,
                 new_tokens=args.new_tokens, **{f"{k}_tokens_per_s": round(v, 1) for k, v in tps.items()},
                 compiled_first_call_s=None if first is None else round(first, 1),
                 **({} if first_unstacked is None else {"compiled_unstacked_first_call_s": round(first_unstacked, 1)}),
                 speedup_vs_hf=round(fastest / hf, 2) if hf else None)
        model = eval_model = None
