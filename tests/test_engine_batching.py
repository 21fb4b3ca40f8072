"""Continuous batching in the engine: rows that join a running batch, per-row settings, the shared timeline, and
the graph-shaped (bucketed) decode forward, all checked against decoding each prompt alone."""
import pytest
import torch

from model.engine import Engine, SamplingParams, _bucket
from tests.test_model import tiny_model


def alone(model, prompt, n, **kw):
    params = SamplingParams(max_new_tokens=n, temperature=0, stop_ids=[], **kw)
    return Engine(model).generate([prompt], params)[0].token_ids


def naive_greedy(model, prompt, n):
    """Greedy decoding by a full forward over the whole sequence each step (no cache at all)."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def run(decoder, joins=None):
    """Step a decoder to the end; `joins` maps step index -> [(prompt, params)] added before that step."""
    joins = joins or {}
    out, reasons, step_no, ids_of = {}, {}, 0, {}
    while True:
        for prompt, params in joins.pop(step_no, []):
            for rid in decoder.add([prompt], params):
                ids_of[rid] = (tuple(prompt), step_no)
        if decoder.idle and not joins:
            break
        step = decoder.step()
        for r, t in step.tokens:
            out.setdefault(r, []).append(t)
        for r, why in step.finished:
            assert r not in reasons, "a row finishes once"
            reasons[r] = why
        step_no += 1
    return out, reasons, ids_of


STAGGERED = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15], [16, 17, 18, 19]]


def staggered_joins(first_budget: int) -> dict:
    """Joins for `run`: prompt 0 at step 0 (first_budget tokens), 1 and 2 at step 2, 3 at step 6, all greedy."""
    g = lambda n: SamplingParams(max_new_tokens=n, temperature=0, stop_ids=[])  # noqa: E731
    return {0: [(STAGGERED[0], g(first_budget))], 2: [(STAGGERED[1], g(5)), (STAGGERED[2], g(9))],
            6: [(STAGGERED[3], g(7))]}


@pytest.mark.parametrize("static_shapes", [False, True])
def test_rows_joining_a_running_batch_decode_as_if_alone(static_shapes):
    model = tiny_model()
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15], [16, 17, 18, 19]]
    budgets = [12, 5, 9, 7]
    g = lambda n: SamplingParams(max_new_tokens=n, temperature=0, stop_ids=[])  # noqa: E731
    decoder = Engine(model).batch(max_rows=4, max_len=64)
    decoder.static_shapes = static_shapes
    joins = {0: [(prompts[0], g(12))], 2: [(prompts[1], g(5)), (prompts[2], g(9))], 6: [(prompts[3], g(7))]}
    out, reasons, ids_of = run(decoder, joins)
    assert len(out) == 4 and set(reasons.values()) == {"length"}
    for rid, (prompt, _) in ids_of.items():
        i = prompts.index(list(prompt))
        assert out[rid] == alone(model, prompts[i], budgets[i])
    assert out[0] == naive_greedy(model, prompts[0], 12)
    # the forwards: a prefill per join, one decode forward per step for the rows running then
    assert decoder.forward_rows[:3] == [1, 1, 1]


def test_timeline_wraps_when_the_buffer_fills_and_long_joiners_shift_it():
    """max_len barely fits each row: the shared write column must drop old columns (and shift right for a long
    prompt that joins a short timeline) without changing any row's output."""
    model = tiny_model()
    g = lambda n: SamplingParams(max_new_tokens=n, temperature=0, stop_ids=[])  # noqa: E731
    decoder = Engine(model).batch(max_rows=3, max_len=16)
    long_prompt = list(range(20, 32))  # 12 tokens + 4 new = the whole buffer
    joins = {0: [([5, 6], g(14))], 3: [(long_prompt, g(4))], 9: [([7, 8, 9], g(13))]}
    out, _, ids_of = run(decoder, joins)
    assert out[0] == alone(model, [5, 6], 14)
    assert out[1] == alone(model, long_prompt, 4)
    assert out[2] == alone(model, [7, 8, 9], 13)


def test_cache_grows_past_its_first_allocation():
    model = tiny_model()
    g = SamplingParams(max_new_tokens=30, temperature=0, stop_ids=[])
    long_prompt = [5 + (i * 7) % 50 for i in range(200)]
    decoder = Engine(model).batch(max_rows=2, max_len=256)  # tiny_model has 256 positions
    decoder.cache.grow(64, 0, 0, 0)  # start small, as a server's 512 columns are small next to 32768
    out, _, _ = run(decoder, {0: [(long_prompt, g)], 5: [([7, 8], g)]})
    assert decoder.cache.length == 256
    assert out[0] == alone(model, long_prompt, 30) and out[1] == alone(model, [7, 8], 30)


@pytest.mark.parametrize("static_shapes", [False, True])  # True: the greedy head of the graph-shaped step
def test_per_row_sampling_settings_and_seeds_do_not_depend_on_neighbours(static_shapes):
    model = tiny_model()
    seeded = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, top_k=50, seed=7, stop_ids=[])
    ref = Engine(model).generate([[5, 6, 7]], seeded)[0].token_ids
    again = Engine(model).generate([[5, 6, 7]], seeded)[0].token_ids
    assert ref == again
    decoder = Engine(model).batch(max_rows=4, max_len=64)
    decoder.static_shapes = static_shapes
    greedy = SamplingParams(max_new_tokens=10, temperature=0, stop_ids=[])
    other = SamplingParams(max_new_tokens=10, temperature=1.3, seed=1, stop_ids=[])
    penal = SamplingParams(max_new_tokens=10, temperature=0, stop_ids=[], repetition_penalty=100.0)
    out, _, ids_of = run(decoder, {0: [([9, 9], greedy), ([5, 6, 7], seeded)], 1: [([4], other), ([3, 3], penal)]})
    by_prompt = {p: out[r] for r, (p, _) in ids_of.items()}
    assert by_prompt[(5, 6, 7)] == ref  # its own generator, whoever shares the batch
    assert by_prompt[(9, 9)] == alone(model, [9, 9], 10)
    assert by_prompt[(3, 3)] == alone(model, [3, 3], 10, repetition_penalty=100.0)
    assert len(set(by_prompt[(3, 3)])) == 10


@pytest.mark.parametrize("static_shapes", [False, True])
def test_stop_ids_per_row_and_rows_leave_at_once(static_shapes):
    model = tiny_model()
    free = alone(model, [5, 6, 7], 8)
    stop = free[3]
    decoder = Engine(model).batch(max_rows=2, max_len=32)
    decoder.static_shapes = static_shapes
    out, reasons, _ = run(decoder, {0: [([5, 6, 7], SamplingParams(max_new_tokens=8, temperature=0,
                                                                   stop_ids=[stop])),
                                        ([5, 6, 7], SamplingParams(max_new_tokens=8, temperature=0, stop_ids=[]))]})
    assert out[0] == free[:free.index(stop)] and reasons[0] == "stop"
    assert out[1] == free and reasons[1] == "length"
    first = free.index(stop)
    # one prefill for both prompts; both rows decode until row 0 meets its stop id, then row 1 alone
    assert decoder.forward_rows == [2] + [2] * first + [1] * (7 - first)


def test_chunked_host_reads_give_the_same_tokens():
    """sync_every > 1 (CUDA's default) keeps tokens on the device between reads; output and reasons are equal."""
    model = tiny_model()
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    free = Engine(model).generate(prompts, SamplingParams(max_new_tokens=9, temperature=0, stop_ids=[]))
    stop = free[1].token_ids[4]
    params = SamplingParams(max_new_tokens=9, temperature=0, stop_ids=[stop])
    one = Engine(model, sync_every=1).generate(prompts, params)
    four = Engine(model, sync_every=4).generate(prompts, params)
    assert [(c.token_ids, c.finish_reason) for c in one] == [(c.token_ids, c.finish_reason) for c in four]
    assert one[1].finish_reason == "stop"


def test_cancel_before_joining_and_capacity_checks():
    model = tiny_model()
    decoder = Engine(model).batch(max_rows=2, max_len=16)
    a = decoder.add([[5, 6]], SamplingParams(max_new_tokens=4, temperature=0))
    decoder.cancel(a[0])
    assert decoder.step().finished == [(a[0], "cancelled")] and decoder.idle
    with pytest.raises(ValueError, match="do not fit"):
        decoder.add([[5], [6], [7]])
    with pytest.raises(ValueError, match="exceeds"):
        decoder.add([[5] * 10], SamplingParams(max_new_tokens=7))
    assert decoder.free_rows == 2


def test_buckets():
    assert [_bucket(n, 64) for n in (1, 2, 3, 5, 64, 65)] == [1, 2, 4, 8, 64, 64]
    assert _bucket(3, 2048, 64) == 64 and _bucket(300, 2048, 64) == 512


def test_fp32_model_decodes_under_bf16_autocast_as_rl_rollouts_do():
    """RL samples from the fp32 policy inside the trainer's bf16 autocast (on CUDA): the cache then holds what the
    layers produce (bf16); it used to be allocated fp32 and the first cache write raised a dtype error."""
    model = tiny_model()
    prompts, n = [[5, 6, 7, 8, 9], [11, 12, 13]], 8
    params = SamplingParams(max_new_tokens=n, temperature=0, stop_ids=[])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        engine = Engine(model)
        rows = engine.generate(prompts, params, num_samples=2)
        decoder = engine.batch(2, 64)
        assert decoder.cache.keys[0].dtype == torch.bfloat16
        expected = [naive_greedy(model, p, n) for p in prompts]
    assert [r.token_ids for r in rows] == [expected[0], expected[0], expected[1], expected[1]]


# the third slowest of the quick loop before issue 26: 42 s of CPU for a torch.compile on CPU (232 s wall at
# load 19); the full suite still runs it
@pytest.mark.slow
def test_compiled_decode_step_equals_eager_over_joins_and_buckets():
    """The decode step CUDA compiles by default (torch.compile, dynamic shapes), run on CPU with graph-shaped
    buckets: rows joining at different steps and a growing column bucket give the eager path's tokens, and one
    compiled graph serves the sizes (a recompile per bucket would stall a server at every new batch size)."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    model = tiny_model()
    outs = []
    for compiled in (False, True):  # compiled with the stacked projections an accelerator decodes with
        engine = Engine(model, compile_decode=compiled, stack_projections=compiled)
        assert engine.compiled is compiled
        decoder = engine.batch(max_rows=4, max_len=128)
        decoder.static_shapes = True  # rows 1, 2, 4 and columns 64 then 128: the shapes graphs are captured at
        out, reasons, _ = run(decoder, staggered_joins(70))
        outs.append(out)
    assert outs[1] == outs[0]
    assert len(outs[0][0]) == 70  # row 0 outlives the 64-column bucket
    frames = counters["stats"]["unique_graphs"]
    assert 1 <= frames <= 2, f"{frames} compiled graphs for one decode step (1, plus one for a batch of 1)"


def test_decode_mode_from_the_environment(monkeypatch):
    model = tiny_model()
    monkeypatch.setenv("MINIMIND_DECODE", "compile")
    assert Engine(model).compiled
    monkeypatch.setenv("MINIMIND_DECODE", "graphs")
    engine = Engine(model)
    assert not engine.compiled and not engine.cuda_graphs  # graphs are CUDA-only; on CPU nothing changes
    monkeypatch.setenv("MINIMIND_DECODE", "fast")
    with pytest.raises(ValueError, match="MINIMIND_DECODE='fast': use one of eager, graphs, compile"):
        Engine(model)


def test_warm_up_leaves_nothing_behind():
    """The server warms the decoder up before its first request (graph capture, compile): afterwards the decoder
    is empty, row ids start at 0 and the first real request decodes as on a fresh decoder."""
    model = tiny_model()
    g = SamplingParams(max_new_tokens=6, temperature=0, stop_ids=[])
    decoder = Engine(model).batch(max_rows=4, max_len=64)
    decoder.static_shapes = True  # the graph-shaped steps warm_up runs on CUDA
    decoder.warm_up()
    assert decoder.idle and decoder.free_rows == 4 and decoder.T == 0
    out, reasons, _ = run(decoder, {0: [([5, 6, 7], g)]})
    assert out == {0: alone(model, [5, 6, 7], 6)} and reasons == {0: "length"}


def test_stacked_projections_decode_as_the_separate_modules_do():
    """Accelerators decode with q/k/v and gate/up stacked into one matmul each (StackedProjections): over rows that
    join at different steps and graph-shaped buckets, the tokens are those of the modules' own forward."""
    model = tiny_model()
    outs = []
    for stacked in (False, True):
        engine = Engine(model, stack_projections=stacked)
        assert (engine.stacked is not None) is stacked
        decoder = engine.batch(max_rows=4, max_len=64)
        decoder.static_shapes = True
        outs.append(run(decoder, staggered_joins(12))[0])
    assert outs[1] == outs[0]
    assert outs[1][0] == naive_greedy(model, STAGGERED[0], 12)
    assert Engine(model).stacked is None  # CPU default: no second copy of the weights


def test_stacked_projections_follow_weight_updates():
    """RL trains the policy between rollouts with one engine: the stacked copies are refreshed from the changed
    weights (in place, so captured graphs stay valid), by an optimizer step or a load_state_dict alike."""
    model = tiny_model()
    prompt, n = [5, 6, 7, 8], 10
    params = SamplingParams(max_new_tokens=n, temperature=0, stop_ids=[])
    engine = Engine(model, stack_projections=True)
    before = engine.generate([prompt], params)[0].token_ids
    stacks = [t.data_ptr() for t in engine.stacked.stacks]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    torch.manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 0.1
    optimizer.step()
    after = engine.generate([prompt], params)[0].token_ids
    assert after == naive_greedy(model, prompt, n) and after != before
    assert [t.data_ptr() for t in engine.stacked.stacks] == stacks
    assert engine.stacked.refresh() == 0  # nothing changed since
    model.load_state_dict(tiny_model(seed=3).state_dict())
    assert engine.generate([prompt], params)[0].token_ids == naive_greedy(model, prompt, n)


def test_stacking_is_off_where_it_would_bypass_the_modules():
    """A LoRA adapter or a forward hook on a projection would be skipped by a stacked matmul, so the engine uses the
    modules; an MoE model stacks q/k/v only (its experts keep their routed forward) and decodes as unstacked."""
    from model.model_lora import apply_lora
    model = tiny_model()
    hook = model.model.layers[1].mlp.up_proj.register_forward_hook(lambda m, i, o: o)
    assert Engine(model, stack_projections=True).stacked is None
    hook.remove()
    assert Engine(model, stack_projections=True).stacked is not None
    assert Engine(apply_lora(tiny_model(), rank=4), stack_projections=True).stacked is None
    moe = tiny_model(use_moe=True)
    engine = Engine(moe, stack_projections=True)
    assert engine.stacked.gate_up_weights is None and len(engine.stacked.qkv_weights) == moe.config.num_hidden_layers
    params = SamplingParams(max_new_tokens=8, temperature=0, stop_ids=[])
    prompts = [[5, 6, 7], [9, 10]]
    assert [r.token_ids for r in engine.generate(prompts, params)] == \
        [r.token_ids for r in Engine(moe, stack_projections=False).generate(prompts, params)]
