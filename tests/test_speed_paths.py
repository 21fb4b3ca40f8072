"""Speed paths on CPU: device-dependent defaults, no torch.compile recompiles over epochs, MoE routing without host
reads, and the Ascend fused kernels (a fake torch_npu whose ops are reference implementations) against the
generic code."""
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from model import model_minimind as mm
from trainer import trainer_utils
from trainer.train_full_sft import get_parser as sft_parser
from trainer.train_pretrain import get_parser as pretrain_parser

TINY = ["--hidden_size", "64", "--num_hidden_layers", "2", "--device", "cpu"]


# ------------------------------------------------------------------------------------------------ device defaults

def resolved(parser, argv, device, cores=16):
    args = parser().parse_args(argv)
    lines = []
    real = trainer_utils.os.cpu_count
    trainer_utils.os.cpu_count = lambda: cores
    try:
        trainer_utils.resolve_device_defaults(args, device, lines.append)
    finally:
        trainer_utils.os.cpu_count = real
    return args, lines


def test_cuda_defaults_keep_minimind_rows_per_step_and_say_so():
    args, lines = resolved(pretrain_parser, [], "cuda")
    assert (args.batch_size, args.accumulation_steps, args.use_compile, args.num_workers) == (128, 2, 1, 8)
    assert args.batch_size * args.accumulation_steps == 32 * 8  # MiniMind's 256 rows per optimizer step
    assert len(lines) == 1 and "--batch_size 128" in lines[0] and "256 rows" in lines[0], lines
    cpu, lines = resolved(pretrain_parser, [], "cpu")
    assert (cpu.batch_size, cpu.accumulation_steps, cpu.use_compile, cpu.num_workers) == (32, 8, 0, 0)
    assert lines == []  # nothing differs from MiniMind's defaults, nothing to say
    sft, _ = resolved(sft_parser, [], "cuda")
    assert (sft.batch_size, sft.accumulation_steps, sft.use_compile) == (16, 1, 1)


def test_typed_flags_win_and_batch_flags_stay_together():
    args, _ = resolved(pretrain_parser, ["--batch_size", "32"], "cuda")
    assert (args.batch_size, args.accumulation_steps) == (32, 8)  # not 32 x cuda's 2: MiniMind's meaning
    args, _ = resolved(pretrain_parser, ["--accumulation_steps", "4", "--use_compile", "0", "--num_workers", "0"],
                       "cuda")
    assert (args.batch_size, args.accumulation_steps, args.use_compile, args.num_workers) == (32, 4, 0, 0)
    args, _ = resolved(pretrain_parser, [], "cuda", cores=3)
    assert args.num_workers == 2  # default workers leave a core for the training process
    assert "32; cuda: 128" in " ".join(pretrain_parser().format_help().split())


# ------------------------------------------------------------------------------------------- recompiles over epochs

@pytest.fixture
def tiny_run(tmp_path, monkeypatch):
    """Run the real supervised loop on 30 packed rows (batch 4: a partial last batch; accumulation 2: a partial last
    group) for two epochs with a save every 2 steps, compiled with Dynamo only (backend eager: the same guards and
    recompiles as inductor, without a C compiler); returns (trainer, log lines, frames compiled in total)."""
    from dataset.lm_dataset import PretrainDataset
    monkeypatch.setenv("MINIMIND_COMPILE_BACKEND", "eager")
    rows = "".join('{"text": "%s"}\n' % ("春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。" * 3) for _ in range(15))  # 30 rows
    (tmp_path / "d.jsonl").write_text(rows, encoding="utf-8")

    def run():
        args = trainer_utils.build_parser("t").parse_args(
            [*TINY, "--max_seq_len", "32", "--batch_size", "4", "--accumulation_steps", "2", "--epochs", "2",
             "--use_compile", "1", "--log_interval", "1", "--save_interval", "2", "--save_dir", str(tmp_path / "o"),
             "--checkpoint_dir", str(tmp_path / "c")])
        ctx, _, model, tokenizer = trainer_utils.start_stage(args)
        dataset = PretrainDataset(tmp_path / "d.jsonl", tokenizer, args.max_seq_len, packing=True)
        assert len(dataset) % args.batch_size and (len(dataset) // args.batch_size) % 2, len(dataset)
        torch._dynamo.reset()
        lines = []
        trainer = trainer_utils.train(args, ctx, model, dataset, trainer_utils.causal_lm_loss, log=lines.append)
        return trainer, lines, trainer_utils.dynamo_frames()
    yield run
    torch._dynamo.reset()


def test_compiled_run_has_no_recompiles_over_two_epochs(tiny_run):
    trainer, lines, frames = tiny_run()
    assert trainer.step == trainer.total_steps == 2 * 4  # 7 full batches of 4 + 1 padded per epoch: groups of 2
    assert frames >= 1 and trainer.recompiles == 0, lines  # epoch boundary, padded batch, saves: one compile
    assert any("filled with" in line and "every row is trained" in line for line in lines), lines
    assert any("torch.compile (backend=eager)" in line for line in lines)
    assert not any("recompiled" in line for line in lines)


def test_keeping_the_partial_batch_would_recompile(tiny_run, monkeypatch):
    """The control: the same run with the last partial batch kept unpadded compiles a second time, and the log says so."""
    class KeepPartial(trainer_utils.ResumableBatchSampler):
        def __init__(self, *a, drop_last=False, pad_last=False, **k):
            super().__init__(*a, drop_last=False, pad_last=False, **k)
    monkeypatch.setattr(trainer_utils, "ResumableBatchSampler", KeepPartial)
    trainer, lines, _ = tiny_run()
    assert trainer.recompiles >= 1
    assert any("recompiled" in line for line in lines), lines


# -------------------------------------------------------------------------------------------------------------- MoE

@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_moe_routing_compiles_as_one_graph_without_host_reads():
    """fullgraph=True fails on any host read (bincount's max, .tolist(), .item()), so this is the no-sync check."""
    torch._dynamo.reset()  # forget shapes other tests compiled the same forward for (they would make it dynamic)
    torch.manual_seed(0)
    model = mm.MiniMindForCausalLM(mm.MiniMindConfig(hidden_size=64, num_hidden_layers=2, use_moe=True))
    model = model.to(torch.bfloat16).train()
    ids = torch.randint(3, 6400, (2, 16))
    eager = model(ids, labels=ids)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)(ids, labels=ids)
    torch.testing.assert_close(compiled.loss, eager.loss)
    torch.testing.assert_close(compiled.aux_loss, eager.aux_loss)
    (compiled.loss + compiled.aux_loss).backward()
    assert all(e.gate_proj.weight.grad is not None for e in model.model.layers[0].mlp.experts)


def test_expert_counts_match_bincount():
    moe = mm.MoEFeedForward(mm.MiniMindConfig(hidden_size=64, use_moe=True))
    flat = torch.randn(40, 64)
    experts = torch.randint(0, 4, (40, 2))
    seen = {}
    real = moe.grouped_experts
    moe.grouped_experts = lambda routed, counts: seen.setdefault("counts", counts) is not None and real(routed, counts)
    moe.dispatch(flat, experts, torch.full((40, 2), 0.5))
    assert seen["counts"].tolist() == torch.bincount(experts.reshape(-1), minlength=4).tolist()


# ---------------------------------------------------------------------------------------- Ascend fused kernels

def fake_torch_npu(calls: dict, missing=()):
    """torch_npu's four fused ops as reference code following their documented semantics; each call is counted."""

    def counted(name, fn):
        def op(*a, **k):
            calls[name] = calls.get(name, 0) + 1
            return fn(*a, **k)
        return op

    def rms_norm(x, gamma, epsilon=1e-6):
        rstd = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + epsilon)
        return (x.float() * rstd).to(x.dtype) * gamma, rstd

    def rotary_mul(x, r1, r2):
        half = x.shape[-1] // 2
        return x * r1 + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * r2

    def swiglu(x, dim=-1):
        a, b = x.chunk(2, dim=dim)
        return F.silu(a) * b

    def fusion_attention(q, k, v, head_num, input_layout, pse=None, padding_mask=None, atten_mask=None, scale=1.0,
                         keep_prob=1.0, pre_tockens=2147483647, next_tockens=2147483647, inner_precise=0,
                         prefix=None, actual_seq_qlen=None, actual_seq_kvlen=None, sparse_mode=0,
                         gen_mask_parallel=True, sync=False):
        assert input_layout == "BNSD" and q.shape[1] == head_num and head_num % k.shape[1] == 0
        rep = head_num // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        scores = (q.float() @ k.float().transpose(-2, -1)) * scale
        if atten_mask is not None:
            if sparse_mode == 2:  # leftUpCausal: the 2048 x 2048 mask's top-left corner
                assert atten_mask.shape == (2048, 2048)
                atten_mask = atten_mask[: q.shape[2], : k.shape[2]]
            scores = scores.masked_fill(atten_mask, float("-inf"))  # True = this score does not take part
        out = (scores.softmax(-1) @ v.float()).to(q.dtype)
        return out, None, None, None, 0, 0, 0

    ops = {"npu_rms_norm": rms_norm, "npu_rotary_mul": rotary_mul, "npu_swiglu": swiglu,
           "npu_fusion_attention": fusion_attention}
    module = types.ModuleType("torch_npu")
    for name, fn in ops.items():
        if name not in missing:
            setattr(module, name, counted(name, fn))
    return module


def forward_both_ways(monkeypatch, dtype, missing=(), attention_mask=None, moe=False):
    torch.manual_seed(0)
    model = mm.MiniMindForCausalLM(mm.MiniMindConfig(hidden_size=64, num_hidden_layers=2, use_moe=moe)).to(dtype)
    for layer in model.model.layers if moe else ():
        layer.mlp.use_grouped_mm = False  # NPU has no torch._grouped_mm: its MoE path is the per-expert loop
    ids = torch.randint(3, 6400, (2, 12))
    generic = model(ids, attention_mask=attention_mask, labels=ids)
    calls = {}
    monkeypatch.setitem(sys.modules, "torch_npu", fake_torch_npu(calls, missing))
    monkeypatch.setattr(mm, "FUSED_DEVICE_TYPES", {"cpu"})  # what "npu" is on an Ascend machine
    fused = model(ids, attention_mask=attention_mask, labels=ids)
    return generic, fused, calls


@pytest.mark.parametrize("moe", [False, True])
def test_fused_ascend_ops_match_the_generic_path_and_are_all_called(monkeypatch, moe):
    generic, fused, calls = forward_both_ways(monkeypatch, torch.bfloat16, moe=moe)
    layers = 2
    experts = (4 + 1) if moe else 1  # on NPU the routed experts run as a loop (even an empty slice), + the shared
    assert calls["npu_rms_norm"] == 2 * layers + 1 and calls["npu_rotary_mul"] == 2 * layers
    assert calls["npu_fusion_attention"] == layers and calls["npu_swiglu"] == layers * experts
    torch.testing.assert_close(fused.logits.float(), generic.logits.float(), atol=0.05, rtol=0.02)
    assert abs(float(fused.loss) - float(generic.loss)) < 0.01


def test_fused_ops_exact_in_fp32_and_each_falls_back_alone(monkeypatch):
    """fp32: the kernels' maths equals the generic code to rounding; attention stays generic (fused wants fp16/bf16),
    and an op this torch_npu lacks (npu_swiglu here) falls back without touching the others."""
    generic, fused, calls = forward_both_ways(monkeypatch, torch.float32, missing=("npu_swiglu",))
    assert "npu_fusion_attention" not in calls and "npu_swiglu" not in calls
    assert calls["npu_rms_norm"] == 5 and calls["npu_rotary_mul"] == 4
    torch.testing.assert_close(fused.logits, generic.logits, atol=1e-5, rtol=1e-5)


def test_fused_attention_takes_padding_masks_the_npu_way_round(monkeypatch):
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :5] = 0  # a left-padded row: SDPA's True = attend becomes the kernel's True = drop
    generic, fused, calls = forward_both_ways(monkeypatch, torch.bfloat16, attention_mask=mask)
    assert calls["npu_fusion_attention"] == 2
    torch.testing.assert_close(fused.logits[1, 5:].float(), generic.logits[1, 5:].float(), atol=0.05, rtol=0.02)
    torch.testing.assert_close(fused.logits[0].float(), generic.logits[0].float(), atol=0.05, rtol=0.02)


def test_fused_ops_only_on_their_device(monkeypatch):
    calls = {}
    monkeypatch.setitem(sys.modules, "torch_npu", fake_torch_npu(calls))
    x = torch.randn(2, 8)
    assert mm.npu_op(x, "npu_rms_norm") is None  # a CPU tensor with FUSED_DEVICE_TYPES = {"npu"}
    monkeypatch.setattr(mm, "FUSED_DEVICE_TYPES", {"cpu"})
    assert mm.npu_op(x, "npu_rms_norm") is not None and mm.npu_op(x, "npu_nonexistent") is None
    monkeypatch.delitem(sys.modules, "torch_npu")
    assert mm.npu_op(x, "npu_rms_norm") is None
    assert math.isclose(float(mm.RMSNorm(8)(torch.ones(1, 8)).sum()), 8.0, rel_tol=1e-5)
