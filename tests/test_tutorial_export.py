"""The tutorial app's data (docs/tutorial/react-app/src/data/) is what scripts/export_tutorial_data.py gives now,
and the values it shows are the model code's own."""
import json
import math

import pytest
import torch

from model.model_minimind import YARN_DEFAULTS, precompute_rope, rope_inv_freq
from model.runtime import ROOT, UserError
from scripts.tutorial import export

DATA = export.DEFAULT_OUT


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    out = tmp_path_factory.mktemp("tutorial-data")
    export.write_export(out)
    return out


@pytest.fixture(scope="module")
def facts(fresh):
    return json.loads((fresh / export.DATA_FILE).read_text(encoding="utf-8"))


def test_committed_export_is_current(fresh):
    stale = export.stale_files(DATA, fresh)
    assert not stale, (f"docs/tutorial/react-app/src/data/: {', '.join(stale)} differ from a fresh export; run "
                       "`python scripts/export_tutorial_data.py` and commit docs/tutorial/react-app/src/data/")


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_export_is_deterministic(fresh, tmp_path):
    export.write_export(tmp_path)
    for name in export.EXPORTED:
        assert (tmp_path / name).read_bytes() == (fresh / name).read_bytes(), name


def test_stale_check_notices_a_changed_value(fresh, tmp_path):
    for name in export.EXPORTED:
        (tmp_path / name).write_bytes((fresh / name).read_bytes())
    assert export.stale_files(tmp_path, fresh) == []
    data = json.loads((tmp_path / export.DATA_FILE).read_text(encoding="utf-8"))
    data["presets"][0]["params"]["total"] += 1
    data["rope"]["per_head_dim"][0]["inv_freq_yarn"][20] *= 1.01
    (tmp_path / export.DATA_FILE).write_text(json.dumps(data), encoding="utf-8")
    assert export.stale_files(tmp_path, fresh) == [export.DATA_FILE]
    (tmp_path / "tokenizer.json").write_text("{}", encoding="utf-8")
    assert export.stale_files(tmp_path, fresh) == [export.DATA_FILE, "tokenizer.json"]


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_check_mode_names_the_stale_file_and_the_fix(fresh, tmp_path):
    for name in export.EXPORTED:
        (tmp_path / name).write_bytes((fresh / name).read_bytes())
    (tmp_path / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(UserError) as e:
        export.check_export(tmp_path)
    assert "tokenizer_config.json" in str(e.value) and "python scripts/export_tutorial_data.py" in str(e.value)


def test_tool_parity_cases_are_tool_mocks_results(fresh):
    """tools.test.ts checks the browser mocks against these cases, so they must be the Python functions' output."""
    from scripts.toolcall import tool_mocks
    cases = json.loads((fresh / export.PARITY_FILE).read_text(encoding="utf-8"))["cases"]
    weather = [c for c in cases if c["name"] == "get_weather" and "error" not in c["result"]]
    assert len(weather) >= 3 and {c["name"] for c in cases} >= {"get_weather", "calculator", "search", "get_time"}
    for c in weather:
        assert c["result"] == tool_mocks.get_weather(**c["arguments"])


def test_flag_bounds_are_the_trainers(fresh):
    from trainer.trainer_utils import MAXIMUM_FLAG_VALUES, MINIMUM_FLAG_VALUES
    bounds = json.loads((fresh / export.BOUNDS_FILE).read_text(encoding="utf-8"))
    assert bounds == {"min": MINIMUM_FLAG_VALUES, "max": MAXIMUM_FLAG_VALUES}


def test_presets_match_minimind2(facts):
    params = {p["key"]: p["params"]["total"] for p in facts["presets"]}
    assert params == {"small": 25_829_888, "base": 104_030_976, "moe": 145_029_760}
    small = next(p for p in facts["presets"] if p["key"] == "small")
    assert small["tied"] and small["params"]["state_dict_keys"] == 75
    # GQA: 2 KV heads of 64 dims per layer, K and V, fp16 -> 8 layers x 2 x 2 x 64 x 2 bytes
    assert small["kv_cache_bytes_per_token_fp16"] == 8 * 2 * 2 * 64 * 2
    assert small["kv_cache_bytes_per_token_fp16_if_mha"] == 4 * small["kv_cache_bytes_per_token_fp16"]


def test_rope_values_are_the_model_codes(facts):
    theta = facts["rope"]["theta"]
    for row in facts["rope"]["per_head_dim"]:
        d = row["head_dim"]
        plain = rope_inv_freq(d, theta)
        yarn = rope_inv_freq(d, theta, dict(YARN_DEFAULTS))
        assert torch.allclose(torch.tensor(row["inv_freq"]), plain, rtol=1e-6)
        assert torch.allclose(torch.tensor(row["inv_freq_yarn"]), yarn, rtol=1e-6)
        assert row["inv_freq_yarn"][0] == row["inv_freq"][0]  # fastest pair untouched
        assert math.isclose(row["inv_freq_yarn"][-1], row["inv_freq"][-1] / 16, rel_tol=1e-5)  # slowest / factor
    cos, _ = precompute_rope(64, 32768, theta, dict(YARN_DEFAULTS))
    for entry in facts["rope"]["table"]:
        assert torch.allclose(torch.tensor(entry["cos_yarn"]), cos[entry["position"], :32], atol=1e-6)
    dots = {(d["m"] - d["n"]): [] for d in facts["rope"]["relative_dot"]}
    for d in facts["rope"]["relative_dot"]:
        dots[d["m"] - d["n"]].append(d["dot"])
    for values in dots.values():  # RoPE: q.k depends only on the distance
        assert max(values) - min(values) < 1e-3 * max(1.0, abs(values[0]))


def test_stages_come_from_the_parsers(facts):
    from trainer.train_dpo import get_parser
    dpo = next(s for s in facts["stages"] if s["stage"] == "dpo")
    beta = next(f for f in dpo["flags"] if f["flag"] == "--beta")
    assert beta["default"] == get_parser().get_default("beta") and not beta["shared"]
    assert dpo["from_weight"] == "full_sft"
    chain = {s["stage"]: s["from_weight"] for s in facts["stages"]}
    assert chain["pretrain"] == "none" and chain["reason"] == "dpo" and chain["grpo"] == "reason"


def test_lr_curve_and_sft_mask(facts):
    from trainer.trainer_utils import lr_at
    curve = facts["lr"][1]
    for step, lr in curve["points"]:
        assert math.isclose(lr, lr_at(step, curve["total"], curve["peak"], curve["warmup"]), rel_tol=1e-9)
    ex = facts["sft_examples"][0]
    trained = [tok for tok, t in zip(ex["tokens"], ex["trained"]) if t]
    assert trained and trained[-1] == "<|im_end|>"  # the assistant learns to stop
    assert not ex["trained"][0]  # <|im_start|> of the system block is never trained


def test_tiny_model_values(facts):
    tiny = facts["tiny"]
    att = tiny["attention"]
    assert att["max_abs_diff_vs_module"] < 1e-5
    for head in att["probs"]:
        for i, row in enumerate(head):
            assert math.isclose(sum(row), 1.0, abs_tol=1e-3) and all(p == 0 for p in row[i + 1:])  # causal
    moe = tiny["moe"]
    assert sum(moe["expert_counts"]) == moe["top_k"] * len(tiny["ids"])
    assert all(math.isclose(sum(w), 1.0, abs_tol=1e-3) for w in moe["weights"])
    lengths = [s["cache_length"] for s in tiny["kv_cache"]]
    assert lengths == list(range(len(tiny["ids"]), len(tiny["ids"]) + len(lengths)))
    assert tiny["tied_same_tensor"] and tiny["state_dict_has_both"]


def test_tokenizer_parity_cases(facts):
    from model.checkpoint import load_tokenizer
    tok = load_tokenizer(ROOT / "model")
    for case in facts["tokenizer"]["parity"]:
        assert tok(case["text"], add_special_tokens=False)["input_ids"] == case["ids"]
    tags = {t["content"]: t["id"] for t in facts["tokenizer"]["added_tokens"]}
    assert tags["<|im_start|>"] == 1 and tags["<tool_call>"] == 7
    chat = facts["tokenizer"]["chat"][0]
    assert chat["rendered"].startswith("<|im_start|>system\n") and chat["ids"][0] == 1


def test_stale_check_allows_a_last_decimal_flip_from_another_cpu(fresh, tmp_path):
    """The committed export was made on one machine; a CPU with other SIMD kernels moves a forward's sums in the 7th
    digit, enough to turn an attention probability rounded to 4 decimals from 0.2210 into 0.2209. That is not a
    stale export (seen on the CI machine); a change of two units in that decimal is."""
    for name in export.EXPORTED:
        (tmp_path / name).write_bytes((fresh / name).read_bytes())
    data = json.loads((tmp_path / export.DATA_FILE).read_text(encoding="utf-8"))
    probs = data["tiny"]["attention"]["probs"][0][-1]
    i = max(range(len(probs)), key=lambda j: probs[j])  # a value well above 0, rounded to 4 decimals
    value, path = probs[i], tmp_path / export.DATA_FILE
    for delta, stale in ((1e-4, []), (-1e-4, []), (2e-4, [export.DATA_FILE])):
        probs[i] = round(value + delta, 4)
        path.write_text(json.dumps(data), encoding="utf-8")
        assert export.stale_files(tmp_path, fresh) == stale, delta
