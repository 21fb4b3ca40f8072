"""Model behaviour users rely on: MiniMind2 checkpoint layout, attention/cache equivalences, MoE, YaRN, generation."""
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM
from transformers.cache_utils import DynamicCache

from model.engine import Engine, SamplingParams, apply_repetition_penalty, filter_top_k_top_p
from model.model_minimind import (MiniMindConfig, MiniMindForCausalLM, StaticKVCache, count_parameters,
                                  default_intermediate_size, gather_logprobs, rope_inv_freq)


def tiny_config(**kw):
    base = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=256)
    base.update(kw)
    return MiniMindConfig(**base)


def tiny_model(seed=0, **kw):
    """A tiny model with weights large enough that greedy decoding does not collapse to one repeated token."""
    torch.manual_seed(seed)
    model = MiniMindForCausalLM(tiny_config(**kw))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0, 0.15)
    return model.eval()


# ------------------------------------------------------------------------------------------ presets and checkpoints

@pytest.mark.parametrize("kw, params, keys", [
    (dict(), 25_829_888, 75),
    (dict(hidden_size=768, num_hidden_layers=16), 104_030_976, 147),
    (dict(hidden_size=640, use_moe=True), 145_029_760, 179),
])
def test_preset_parameter_counts(kw, params, keys):
    with torch.device("meta"):
        model = MiniMindForCausalLM(MiniMindConfig(**kw))
    assert count_parameters(model) == params
    assert len(model.state_dict()) == keys


def test_intermediate_size_rule():
    assert [default_intermediate_size(h) for h in (512, 640, 768)] == [1408, 1728, 2048]


def test_minimind2_dense_key_names_and_shapes():
    with torch.device("meta"):
        sd = MiniMindForCausalLM(MiniMindConfig()).state_dict()
    expected = {"model.embed_tokens.weight": (6400, 512), "model.norm.weight": (512,), "lm_head.weight": (6400, 512)}
    for i in range(8):
        p = f"model.layers.{i}."
        expected.update({
            p + "self_attn.q_proj.weight": (512, 512), p + "self_attn.o_proj.weight": (512, 512),
            p + "self_attn.k_proj.weight": (128, 512), p + "self_attn.v_proj.weight": (128, 512),
            p + "input_layernorm.weight": (512,), p + "post_attention_layernorm.weight": (512,),
            p + "mlp.gate_proj.weight": (1408, 512), p + "mlp.up_proj.weight": (1408, 512),
            p + "mlp.down_proj.weight": (512, 1408),
        })
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected


def test_moe_key_names():
    with torch.device("meta"):
        sd = MiniMindForCausalLM(MiniMindConfig(hidden_size=640, use_moe=True)).state_dict()
    assert tuple(sd["model.layers.0.mlp.gate.weight"].shape) == (4, 640)
    for e in range(4):
        assert tuple(sd[f"model.layers.7.mlp.experts.{e}.down_proj.weight"].shape) == (640, 1728)
    assert tuple(sd["model.layers.3.mlp.shared_experts.0.gate_proj.weight"].shape) == (1728, 640)


def test_tied_embeddings_and_minimind2_state_dict_round_trip(tmp_path):
    model = tiny_model()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    # MiniMind2 saves half precision with both tied keys present; it must load strictly and stay tied.
    sd = {k: v.half() for k, v in model.state_dict().items()}
    assert "lm_head.weight" in sd and "model.embed_tokens.weight" in sd
    torch.save(sd, tmp_path / "full_sft_64.pth")
    fresh = MiniMindForCausalLM(tiny_config())
    fresh.load_state_dict(torch.load(tmp_path / "full_sft_64.pth"), strict=True)
    assert fresh.lm_head.weight.data_ptr() == fresh.model.embed_tokens.weight.data_ptr()
    for k, v in fresh.state_dict().items():
        assert torch.equal(v.half(), sd[k]), k


def test_save_pretrained_and_auto_class(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, MiniMindForCausalLM)
    x = torch.randint(0, 6400, (1, 12))
    torch.testing.assert_close(loaded(x).logits, model(x).logits)


def test_yarn_config_loads_from_minimind_json():
    cfg = MiniMindConfig.from_dict({"hidden_size": 64, "num_attention_heads": 4, "inference_rope_scaling": True,
                                    "rope_scaling": {"type": "yarn", "factor": 16}})
    assert cfg.yarn_parameters["original_max_position_embeddings"] == 2048


# ------------------------------------------------------------------------------------------------------------- RoPE

def test_yarn_frequencies_match_formula():
    d, theta = 64, 1e6
    plain = [1 / theta ** (2 * i / d) for i in range(d // 2)]
    low = max(math.floor(d * math.log(2048 / (2 * math.pi * 32)) / (2 * math.log(theta))), 0)
    high = min(math.ceil(d * math.log(2048 / (2 * math.pi * 1)) / (2 * math.log(theta))), d // 2 - 1)
    expected = []
    for i, f in enumerate(plain):
        ramp = min(max((i - low) / max(high - low, 1e-3), 0.0), 1.0)
        expected.append(f * (1 - ramp) + f / 16 * ramp)
    got = rope_inv_freq(d, theta, MiniMindConfig(inference_rope_scaling=True).yarn_parameters)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32))
    assert got[0] == plain[0] and abs(got[-1] - plain[-1] / 16) < 1e-12  # fastest kept, slowest divided
    torch.testing.assert_close(rope_inv_freq(d, theta, None), torch.tensor(plain, dtype=torch.float32))


# -------------------------------------------------------------------------------------------------------- attention

def left_padded_batch():
    rows = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], [15, 16, 17, 18, 19]]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return rows, ids, mask


@pytest.mark.parametrize("use_moe", [False, True])
def test_sdpa_equals_plain_attention(use_moe):
    sdpa = tiny_model(use_moe=use_moe)
    plain = MiniMindForCausalLM(tiny_config(use_moe=use_moe, flash_attn=False)).eval()
    plain.load_state_dict(sdpa.state_dict())
    x = torch.randint(3, 6400, (2, 20))
    torch.testing.assert_close(sdpa(x).logits, plain(x).logits, atol=1e-5, rtol=1e-5)
    _, ids, mask = left_padded_batch()
    a, b = sdpa(ids, attention_mask=mask).logits, plain(ids, attention_mask=mask).logits
    torch.testing.assert_close(a[mask.bool()], b[mask.bool()], atol=1e-5, rtol=1e-5)


def test_left_padding_does_not_change_real_tokens():
    model = tiny_model()
    rows, ids, mask = left_padded_batch()
    batched = model(ids, attention_mask=mask).logits
    for i, r in enumerate(rows):
        alone = model(torch.tensor([r])).logits[0]
        torch.testing.assert_close(batched[i, -len(r):], alone, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(batched).all()


@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
def test_cached_decoding_equals_full_forward(cache_kind):
    model = tiny_model()
    x = torch.randint(3, 6400, (2, 14))
    full = model(x).logits
    cache = DynamicCache(config=model.config) if cache_kind == "dynamic" else StaticKVCache(model.config, 2, 14)
    out = model(x[:, :6], past_key_values=cache, use_cache=True)  # prefill, then chunk of 3, then single tokens
    steps = [out.logits]
    steps.append(model(x[:, 6:9], past_key_values=cache, use_cache=True).logits)
    for t in range(9, 14):
        steps.append(model(x[:, t:t + 1], past_key_values=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_static_cache_overflow_is_an_error():
    model = tiny_model()
    cache = StaticKVCache(model.config, 1, 4)
    with pytest.raises(ValueError, match="KV cache is full"):
        model(torch.randint(3, 100, (1, 5)), past_key_values=cache, use_cache=True)


def test_logits_to_keep_and_loss():
    model = tiny_model()
    x = torch.randint(3, 6400, (2, 10))
    full = model(x).logits
    torch.testing.assert_close(model(x, logits_to_keep=1).logits, full[:, -1:])
    labels = x.clone()
    labels[:, :4] = -100
    expected = F.cross_entropy(full[:, :-1].reshape(-1, 6400), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(model(x, labels=labels).loss, expected)


def test_token_logprobs_match_log_softmax():
    model = tiny_model()
    x = torch.randint(3, 6400, (2, 9))
    logits = model(x).logits[:, :-1]
    expected = torch.log_softmax(logits, -1).gather(-1, x[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(model.token_logprobs(x), expected)
    torch.testing.assert_close(gather_logprobs(logits, x[:, 1:]), expected)


def test_gradient_checkpointing_gives_same_gradients():
    x = torch.randint(3, 6400, (2, 12))
    grads = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(x, labels=x).loss.backward()
        grads.append(model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


# -------------------------------------------------------------------------------------------------------------- MoE

def test_moe_train_path_equals_inference_path():
    model = tiny_model(use_moe=True)
    x = torch.randint(3, 6400, (2, 16))
    eval_logits = model(x).logits
    train_out = model.train()(x)
    torch.testing.assert_close(train_out.logits, eval_logits, atol=1e-6, rtol=1e-6)
    assert train_out.aux_loss > 0


def test_moe_aux_loss_matches_hand_computation():
    model = tiny_model(use_moe=True, num_hidden_layers=1).train()
    moe = model.model.layers[0].mlp
    b, t, e, k = 2, 5, 4, 2
    h = torch.randn(b, t, 64)
    _, aux = moe(h)
    probs = (h.reshape(-1, 64) @ moe.gate.weight.T).softmax(-1).view(b, t, e)
    top = probs.topk(k, dim=-1).indices
    total = 0.0
    for s in range(b):
        for j in range(e):
            share = (top[s] == j).sum().item() / (t * k)  # fraction of this sequence's routing slots
            total += (e * share) * probs[s, :, j].mean().item()
    torch.testing.assert_close(aux, torch.tensor(0.01 * total / b), atol=1e-6, rtol=1e-5)


def test_moe_output_matches_naive_per_token_mixture():
    model = tiny_model(use_moe=True, num_hidden_layers=1)
    moe = model.model.layers[0].mlp
    h = torch.randn(1, 6, 64)
    out, _ = moe(h)
    for i in range(6):
        tok = h[0, i]
        probs = (moe.gate.weight @ tok).softmax(-1)
        w, idx = probs.topk(2)
        w = w / w.sum()
        expected = sum(wi * moe.experts[j](tok) for wi, j in zip(w, idx.tolist())) + moe.shared_experts[0](tok)
        torch.testing.assert_close(out[0, i], expected, atol=1e-5, rtol=1e-5)


def test_every_expert_gets_gradients_even_without_tokens():
    model = tiny_model(use_moe=True).train()
    bias = torch.tensor([5.0, 4.0, -5.0, -5.0])  # route every token to experts 0 and 1 only
    for layer in model.model.layers:
        layer.mlp.gate.register_forward_hook(lambda mod, inp, out: out * 0 + bias)
    x = torch.full((1, 8), 7)
    out = model(x, labels=x)
    (out.loss + out.aux_loss).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient (DDP would fail)"
    assert model.model.layers[0].mlp.experts[3].up_proj.weight.grad.abs().sum() == 0


# ------------------------------------------------------------------------------------------------------- generation

def naive_greedy(model, prompt, n):
    ids = torch.tensor([prompt])
    for _ in range(n):
        ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, len(prompt):].tolist()


@pytest.mark.parametrize("use_moe", [False, True])
def test_engine_greedy_equals_naive_and_hf_generate(use_moe):
    model = tiny_model(use_moe=use_moe)
    prompts = [[5, 6, 7, 8, 9], [11, 12], [20, 21, 22, 23]]
    greedy = SamplingParams(max_new_tokens=8, temperature=0, stop_ids=[])
    got = Engine(model).generate(prompts, greedy)
    for c, p in zip(got, prompts):
        expected = naive_greedy(model, p, 8)
        assert c.token_ids == expected
        hf = model.generate(torch.tensor([p]), max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert hf[0, len(p):].tolist() == expected
    assert len(set(tuple(c.token_ids) for c in got)) > 1  # the rows really differ


def test_hf_generate_with_left_padded_batch_matches_engine():
    model = tiny_model()
    rows, ids, mask = left_padded_batch()
    hf = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None,
                        pad_token_id=0)
    got = Engine(model).generate(rows, SamplingParams(max_new_tokens=6, temperature=0, stop_ids=[]))
    assert [c.token_ids for c in got] == hf[:, ids.shape[1]:].tolist()


def test_engine_stop_ids_and_finish_reason():
    model = tiny_model()
    prompt = [5, 6, 7]
    free = naive_greedy(model, prompt, 6)
    stop = free[3]
    first = free.index(stop)
    got = Engine(model).generate([prompt], SamplingParams(max_new_tokens=6, temperature=0, stop_ids=[stop]))[0]
    assert got.token_ids == free[:first] and got.finish_reason == "stop"
    got = Engine(model).generate([prompt], SamplingParams(max_new_tokens=3, temperature=0, stop_ids=[]))[0]
    assert len(got.token_ids) == 3 and got.finish_reason == "length"


def test_engine_samples_are_seeded_and_grouped():
    model = tiny_model()
    params = SamplingParams(max_new_tokens=6, temperature=1.0, top_p=0.9, top_k=50, seed=123, stop_ids=[])
    a = Engine(model).generate([[5, 6, 7], [8, 9]], params, num_samples=3)
    b = Engine(model).generate([[5, 6, 7], [8, 9]], params, num_samples=3)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert [(c.prompt_index, c.sample_index) for c in a] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    # greedy samples of one prompt are identical and equal to the single-sample result
    g = Engine(model).generate([[5, 6, 7]], SamplingParams(max_new_tokens=5, temperature=0, stop_ids=[]),
                               num_samples=2)
    assert g[0].token_ids == g[1].token_ids == naive_greedy(model, [5, 6, 7], 5)


def test_engine_streaming_callback_sees_every_token():
    model = tiny_model()
    seen = []
    got = Engine(model).generate([[5, 6], [7, 8, 9]], SamplingParams(max_new_tokens=4, temperature=0, stop_ids=[]),
                                 on_token=lambda row, tok: seen.append((row, tok)))
    assert sorted(seen) == sorted((i, t) for i, c in enumerate(got) for t in c.token_ids)


def test_top_k_top_p_and_repetition_penalty():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert torch.isinf(filter_top_k_top_p(logits, 2, 1.0)[0, 2:]).all()
    probs = logits.softmax(-1)[0]  # [0.64, 0.24, 0.09, 0.03]
    kept = ~torch.isinf(filter_top_k_top_p(logits, 0, 0.8))
    assert kept.tolist() == [[True, True, False, False]] and probs[0] < 0.8 <= probs[:2].sum()
    out = apply_repetition_penalty(torch.tensor([[2.0, -2.0, 2.0]]), torch.tensor([[True, True, False]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 2.0]]


def test_repetition_penalty_changes_greedy_output():
    model = tiny_model()
    plain = Engine(model).generate([[5, 6, 7]], SamplingParams(max_new_tokens=12, temperature=0, stop_ids=[]))[0]
    strong = Engine(model).generate([[5, 6, 7]], SamplingParams(max_new_tokens=12, temperature=0, stop_ids=[],
                                                                repetition_penalty=100.0))[0]
    assert len(set(strong.token_ids)) == 12  # every repeat is suppressed
    assert plain.token_ids != strong.token_ids or len(set(plain.token_ids)) == 12


def test_moe_grouped_gemm_equals_per_expert_loop():
    model = tiny_model(use_moe=True).train()
    x = torch.randint(3, 6400, (2, 16))
    results = []
    for grouped in (True, False):
        model.zero_grad()
        for layer in model.model.layers:
            layer.mlp.use_grouped_mm = grouped
        out = model(x, labels=x)
        (out.loss + out.aux_loss).backward()
        results.append((out.logits.detach(), model.model.layers[1].mlp.experts[2].down_proj.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=1e-5)


def test_loss_is_zero_not_nan_when_nothing_is_labelled():
    model = tiny_model()
    x = torch.randint(3, 6400, (2, 6))
    loss = model(x, labels=torch.full_like(x, -100)).loss
    assert loss.item() == 0.0


def test_forward_token_logprobs_are_the_loss_and_match_a_full_log_softmax():
    """One computation for SFT, DPO, reasoning SFT and RL: the forward's token_logprobs."""
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2)).eval()
    ids = torch.randint(3, 6400, (2, 12))
    labels = ids.clone()
    labels[0, :5] = -100  # a prompt that is not trained on
    out = model(ids, labels=labels)
    full = torch.log_softmax(out.logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    mask = labels[:, 1:] != -100
    torch.testing.assert_close(out.token_logprobs, full * mask)
    torch.testing.assert_close(out.loss, -(full * mask).sum() / mask.sum())
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, 6400).float(), labels[:, 1:].reshape(-1), ignore_index=-100))
    tail = model(ids, logprob_len=4)
    assert tail.logits.shape[1] == 5  # only the positions that predict the last 4 tokens (+1 for the shift)
    torch.testing.assert_close(tail.token_logprobs, full[:, -4:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.token_logprobs(ids), full, atol=1e-5, rtol=1e-5)


def test_engine_reports_finish_reasons_and_drops_finished_rows():
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2)).eval()
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    free = Engine(model).generate(prompts, SamplingParams(max_new_tokens=6, temperature=0, stop_ids=[]))
    stop = free[1].token_ids[2]  # row 1 meets this id at its 3rd token (rows 0 and 2 may too, earlier or later)
    decoding = Engine(model).stream(prompts, SamplingParams(max_new_tokens=6, temperature=0, stop_ids=[stop]))
    tokens, finished = {r: [] for r in range(3)}, {}
    for step in decoding:
        for r, t in step.tokens:
            tokens[r].append(t)
        for r, reason in step.finished:
            assert r not in finished, "a row finishes once"
            finished[r] = reason
    for r in range(3):
        expect = free[r].token_ids[:free[r].token_ids.index(stop)] if stop in free[r].token_ids else free[r].token_ids
        assert tokens[r] == expect  # greedy output unchanged by rows leaving the batch
        assert finished[r] == ("stop" if stop in free[r].token_ids else "length")
    # one prefill of 3 rows, then one forward per step with only the rows still running
    ends = [len(tokens[r]) if finished[r] == "stop" else 5 for r in range(3)]  # the step each row ended at
    assert min(ends) < 5  # at least one row leaves early, so the batch shrinks
    running = [sum(e >= k for e in ends) for k in range(1, 6)]
    assert decoding.forward_rows == [3] + [n for n in running if n]


def test_cancelling_a_row_stops_its_decoding_at_once():
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2)).eval()
    decoding = Engine(model).stream([[5, 6, 7], [8, 9, 10]], SamplingParams(max_new_tokens=8, temperature=0,
                                                                            stop_ids=[]))
    counts, finished = [0, 0], {}
    for step in decoding:
        for r, _ in step.tokens:
            counts[r] += 1
        finished.update(dict(step.finished))
        if counts[0] == 2 and 0 not in finished:
            decoding.cancel(0)
    assert counts == [2, 8] and finished == {0: "cancelled", 1: "length"}
    assert decoding.forward_rows == [2, 2] + [1] * 6  # prefill, step 2 with both, then row 1 alone
    got = Engine(model).generate([[5, 6, 7]], SamplingParams(max_new_tokens=4, temperature=0, stop_ids=[]))[0]
    assert got.finish_reason == "length" and len(got.token_ids) == 4
