"""RL stages (PPO, GRPO, SPO): estimators against hand computations, rollouts, rewards, the scripts end to end,
resume, a CPU learning run, and the errors a user can fix."""
import importlib
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
from trainer import rl_rewards  # noqa: E402
from trainer import rl_utils as rl  # noqa: E402
from trainer import train_grpo  # noqa: E402
from trainer import train_ppo  # noqa: E402
from trainer import train_spo  # noqa: E402
from trainer import trainer_utils  # noqa: E402
from conftest import run_main  # noqa: E402

from model.model_minimind import MiniMindConfig, MiniMindForCausalLM  # noqa: E402

TINY = ["--hidden_size", "64", "--num_hidden_layers", "2", "--device", "cpu", "--log_interval", "1"]
LETTER_PROMPT = "从 A、B、C、D 中选一个字母。第{}题。"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: in-process runs on one thread


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def reward_lines(stdout):
    """Mean reward of each logged step."""
    return [float(x) for x in re.findall(r" reward (-?[0-9.]+)", stdout)]


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A tiny policy that answers a letter question with one random letter A-D and stops (a 32-step SFT run),
    saved as both full_sft_64 and reason_64; plus RL prompts whose reference answer is always C."""
    base = tmp_path_factory.mktemp("rl")
    rng = random.Random(0)
    sft = write_jsonl(base / "sft.jsonl", [{"conversations": [
        {"role": "user", "content": LETTER_PROMPT.format(i)},
        {"role": "assistant", "content": rng.choice("ABCD")}]} for i in range(256)])
    prompts = write_jsonl(base / "letters.jsonl", [{"conversations": [
        {"role": "user", "content": LETTER_PROMPT.format(i)},
        {"role": "assistant", "content": "C"}], "answer_type": "choice"} for i in range(256)])
    out = base / "out"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    from trainer import train_full_sft
    train_full_sft.main([*TINY, "--from_weight", "none", "--data_path", str(sft), "--max_seq_len", "48",
                         "--batch_size", "16", "--learning_rate", "5e-3", "--epochs", "2", "--log_interval", "100",
                         "--save_dir", str(out), "--checkpoint_dir", str(base / "ck")])
    torch.set_num_threads(before)
    for ext in (".pth", ".json"):
        shutil.copy(out / f"full_sft_64{ext}", out / f"reason_64{ext}")
    return SimpleNamespace(base=base, out=out, prompts=prompts)


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    """A tiny Llama sequence-classification reward model (one score per text) with MiniMind's tokenizer."""
    from transformers import LlamaConfig, LlamaForSequenceClassification
    folder = tmp_path_factory.mktemp("reward_model")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=6400, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, num_labels=1,
                         pad_token_id=0)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    trainer_utils.load_tokenizer().save_pretrained(folder)
    return folder


def run_script(name, *args, check=True, in_process=True):
    """A stage with the tiny flags: main(argv) in this process, or as a real subprocess."""
    argv = [*TINY, *map(str, args)]
    if in_process:
        proc = run_main(importlib.import_module(f"trainer.{Path(name).stem}").main, argv)
    else:
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, str(ROOT / "trainer" / name), *argv], cwd=ROOT,
                              capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_in_process(module, capsys, *args):
    module.main([*TINY, *map(str, args)])
    return capsys.readouterr().out


def fails_in_process(module, capsys, *args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        module.main([*TINY, *map(str, args)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    return err


# ------------------------------------------------------------------------------------------------ estimators by hand

def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.3], [1.0, 0.5, 9.0]])  # 9.0 sits on padding and must not leak in
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = train_ppo.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: d2 = 1 - 0.3 = 0.7; d1 = 0.9*0.3 - 0.4 = -0.13, A1 = -0.13 + 0.72*0.7 = 0.374;
    #        d0 = 0.9*0.4 - 0.5 = -0.14, A0 = -0.14 + 0.72*0.374 = 0.12928
    # row 1: the response ends at t=1: d1 = 2 - 0.5 = 1.5; d0 = 0.9*0.5 - 1 = -0.55, A0 = -0.55 + 0.72*1.5 = 0.53
    torch.testing.assert_close(adv, torch.tensor([[0.12928, 0.374, 0.7], [0.53, 1.5, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.62928, 0.774, 1.0], [1.53, 2.0, 0.0]]))
    lam1, _ = train_ppo.gae(rewards, values, mask, gamma=1.0, lam=1.0)  # lambda 1: Monte-Carlo return minus value
    torch.testing.assert_close(lam1[0], torch.tensor([1.0, 1.0, 1.0]) - values[0])


def test_group_advantages_and_whitening():
    adv = train_grpo.group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0]), group_size=4)
    scale = 0.5 / (0.5 + 1e-4)  # mean 0.5, population std 0.5
    torch.testing.assert_close(adv, torch.tensor([scale, -scale, -scale, scale, 0.0, 0.0, 0.0, 0.0]))
    x, mask = torch.tensor([[1.0, 3.0, 100.0], [5.0, 7.0, 9.0]]), torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    w = train_ppo.whiten(x, mask)
    assert w[0, 2] == 0 and abs(float(rl.masked_mean(w, mask))) < 1e-6
    assert float(rl.masked_mean(w ** 2, mask)) == pytest.approx(1.0, abs=1e-5)


def test_clipped_policy_loss_stops_gradient_outside_the_trust_region():
    old = torch.zeros(4)
    new = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5])).requires_grad_()
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    mask = torch.ones(4, 1)
    loss, frac = rl.clipped_policy_loss(new[:, None], old[:, None], adv, mask, clip_epsilon=0.2)
    # -min(r A, clip(r) A): -1.2 (clipped), 1.5, -0.5, 0.8 (clipped); mean 0.15
    assert float(loss.detach()) == pytest.approx((-1.2 + 1.5 - 0.5 + 0.8) / 4)
    loss.backward()
    assert new.grad[0] == 0 and new.grad[3] == 0  # clipped tokens give no gradient
    assert float(new.grad[1]) == pytest.approx(1.5 / 4) and float(new.grad[2]) == pytest.approx(-0.5 / 4)
    assert float(frac) == 1.0
    same = torch.zeros(2, 3, requires_grad=True)
    loss, frac = rl.clipped_policy_loss(same, same.detach(), torch.tensor([2.0, -1.0]), torch.ones(2, 3), 0.2)
    loss.backward()  # first update after a rollout: the plain policy gradient -A * grad log pi
    assert float(frac) == 0 and torch.allclose(same.grad, torch.tensor([[-2.0] * 3, [1.0] * 3]) / 6)


def test_k3_kl_is_exact_in_expectation_and_never_negative():
    assert float(rl.kl_k3(torch.log(torch.tensor(0.5)), torch.log(torch.tensor(0.25)))) == \
        pytest.approx(0.5 - 1 - math.log(0.5))  # r = 0.25 / 0.5
    p, q = torch.tensor([0.6, 0.3, 0.1]), torch.tensor([0.2, 0.5, 0.3])
    expected = (p * rl.kl_k3(p.log(), q.log())).sum()  # E_p[k3] over all outcomes
    torch.testing.assert_close(expected, (p * (p / q).log()).sum())  # = KL(p || q)
    torch.testing.assert_close((p * rl.kl_k1(p.log(), q.log())).sum(), expected)
    grid = torch.linspace(-5, 5, 41)
    assert (rl.kl_k3(grid, torch.zeros(41)) >= 0).all() and float(rl.kl_k3(grid, grid).abs().max()) == 0


def test_spo_value_tracker_update_and_state():
    tracker = train_spo.ValueTracker(rho_min=0.5, rho_max=0.96, d_half=0.06)
    assert tracker.alpha == tracker.beta == 1.0 and tracker.baseline() == 0.0
    assert tracker.update(mean_reward=3.0, mean_logprob=-1.0) == 0.96  # first batch: nothing moved -> rho_max
    assert (tracker.alpha, tracker.beta) == pytest.approx((1.96, 0.96))
    assert tracker.baseline() == pytest.approx(1.96 / 2.92 * 6 - 3)
    assert tracker.update(mean_reward=-3.0, mean_logprob=-1.06) == pytest.approx(0.5)  # moved d_half: 2^-1
    assert (tracker.alpha, tracker.beta) == pytest.approx((0.98, 1.48))
    assert tracker.update(mean_reward=0.0, mean_logprob=5.0) == 0.5  # a big move is clipped to rho_min
    copy = train_spo.ValueTracker()
    copy.load_state_dict(json.loads(json.dumps(tracker.state_dict())))
    assert copy.baseline() == tracker.baseline() and copy.last_logprob == 5.0


# -------------------------------------------------------------------------------------------------------- rewards

def test_rule_reward_checks_letters_numbers_and_text():
    assert rl_rewards.is_correct("C", "C", "choice") and rl_rewards.is_correct("答案是C。", "C", "choice")
    assert not rl_rewards.is_correct("C 或 D", "C", "choice") and not rl_rewards.is_correct("Cat", "C", "choice")
    assert rl_rewards.is_correct("8画", "8", "number") and rl_rewards.is_correct("8.0", "8", "number")
    assert not rl_rewards.is_correct("8 或 10", "8", "number") and not rl_rewards.is_correct("八", "8", "number")
    assert rl_rewards.is_correct(" 周孚。", "周孚", "exact") and not rl_rewards.is_correct("周孚孚", "周孚", "exact")
    rule = rl_rewards.RuleReward(SimpleNamespace(reasoning=1, data_path="x.jsonl"), None, None)
    good = "<think>\n想一想\n</think>\n<answer>\nC\n</answer>"
    assert rule(responses=[good, "<think>\nC\n</think>\nD", "C"], answers=["C"] * 3,
                answer_types=["choice"] * 3) == [1.0, 0.0, 1.0]  # the <answer> part, else what follows </think>
    assert rl_rewards.format_reward([good, "<think>\nx\n</think>", "plain"]) == [1.0, 0.25, 0.0]
    with pytest.raises(trainer_utils.UserError, match="reference answer"):
        rule(responses=["C"], answers=[""], answer_types=[""])


def test_reward_set_sums_hook_and_format_then_clips(tmp_path):
    hook = tmp_path / "my_reward.py"
    hook.write_text("def length_bonus(prompts, responses, answers, answer_types):\n"
                    "    return [10.0 * len(r) for r in responses]\n", encoding="utf-8")
    args = SimpleNamespace(reward="rule", reward_fn=f"{hook}:length_bonus", reasoning=1, data_path="x")
    rewards = rl_rewards.RewardSet(args, None, lambda msg: None)
    rollout = SimpleNamespace(prompts=["p"] * 2, responses=["", "<think>\nx\n</think>\n<answer>\nC\n</answer>"],
                              answers=["C", "C"], answer_types=["choice"] * 2, input_ids=torch.zeros(1))
    total, parts = rewards(rollout)
    assert total.tolist() == [0.0, 3.0]  # 0 + 0 + 0; 1 + 390 + 1 clipped to 3
    assert parts == {"reward_rule": 0.5, "reward_fn": 195.0, "reward_format": 0.5}
    for spec, message in [("no_colon", "module:function"), (f"{hook}:missing", "no function missing"),
                          ("not_a_module_xyz:f", "cannot import"), ("absent.py:f", "file not found")]:
        with pytest.raises(trainer_utils.UserError, match=message):
            rl_rewards.load_reward_fn(spec)


def test_model_reward_scores_in_batches_and_clips(reward_model_dir):
    args = SimpleNamespace(reward_model_path=str(reward_model_dir), reasoning=0, trust_remote_code=0)
    ctx = trainer_utils.Context(device=torch.device("cpu"), dtype=torch.float32)
    scorer = rl_rewards.ModelReward(args, ctx, lambda msg: None)
    prompts = ["<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
               "<|im_start|>assistant\n"] * 3
    assert rl_rewards.chatml_messages(prompts[0]) == [{"role": "system", "content": "You are a helpful assistant"},
                                              {"role": "user", "content": "你好"}]
    responses = ["短", "一个长得多的回答，有好几个词。", "中等长度"]
    batched = torch.tensor(scorer(prompts=prompts, responses=responses))
    alone = torch.tensor([scorer(prompts=[p], responses=[r])[0] for p, r in zip(prompts, responses)])
    torch.testing.assert_close(batched, alone)  # padding does not change a score
    assert batched.unique().numel() == 3
    scorer.model.score.weight.data *= 1e4
    assert set(scorer(prompts=prompts, responses=responses)) <= {-3.0, 3.0}


@pytest.mark.parametrize("case", ["missing", "causal_lm", "two_labels", "remote_code"])
def test_bad_reward_model_folders_are_explained(case, tmp_path, reward_model_dir):
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification
    folder = tmp_path / "rm"
    small = dict(vocab_size=6400, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1)
    expect = {"missing": "reward model folder not found", "causal_lm": "LlamaForCausalLM, which has no reward head",
              "two_labels": "num_labels=2", "remote_code": "--trust_remote_code 1"}[case]
    if case == "causal_lm":
        LlamaForCausalLM(LlamaConfig(**small)).save_pretrained(folder)
    elif case == "two_labels":
        LlamaForSequenceClassification(LlamaConfig(**small, num_labels=2)).save_pretrained(folder)
    elif case == "remote_code":
        shutil.copytree(reward_model_dir, folder)
        config = json.loads((folder / "config.json").read_text())
        config["auto_map"] = {"AutoModel": "modeling_internlm2.InternLM2ForRewardModel"}
        (folder / "config.json").write_text(json.dumps(config))
    args = SimpleNamespace(reward_model_path=str(folder), reasoning=0, trust_remote_code=0)
    with pytest.raises(trainer_utils.UserError, match=re.escape(expect)):
        rl_rewards.ModelReward(args, trainer_utils.Context(device=torch.device("cpu"), dtype=torch.float32), print)


# ---------------------------------------------------------------------------------------------- rollouts, log-probs

def test_rollout_layout_and_logprobs_match_the_model(tmp_path):
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2))
    tokenizer = trainer_utils.load_tokenizer()
    rows = [{"conversations": [{"role": "user", "content": text}, {"role": "assistant", "content": "1"}],
             "answer_type": "number"} for text in ("一", "一个长一些的问题，好多字")]
    dataset = rl.RLAIFDataset(write_jsonl(tmp_path / "p.jsonl", rows), tokenizer, max_prompt_length=66)
    batch = dataset.collate([dataset[0], dataset[1]])
    args = SimpleNamespace(max_gen_len=6, temperature=0.0)  # greedy: the G copies of a prompt are identical
    ctx = trainer_utils.Context(device=torch.device("cpu"), dtype=torch.float32)
    prompt_width = batch["input_ids"].shape[1]
    first = rl.sample_rollout(model, tokenizer, batch, args, num_samples=3, ctx=ctx)
    stop = int(first.input_ids[0, prompt_width + 2])
    model.config.eos_token_id = stop  # so the first prompt's rows stop by their third token
    ro = rl.sample_rollout(model, tokenizer, batch, args, num_samples=3, ctx=ctx)
    assert ro.input_ids.shape[0] == 6 and ro.prompts[:3] == [batch["prompt"][0]] * 3 and ro.answers == ["1"] * 6
    assert torch.equal(ro.input_ids[:, :prompt_width], batch["input_ids"].repeat_interleave(3, 0))
    lengths = ro.response_mask.sum(1).long()
    assert lengths[:3].tolist() == [lengths[0]] * 3 and lengths[0] <= 3
    for row, n in enumerate(lengths.tolist()):
        response = ro.input_ids[row, prompt_width:]
        assert (response[n:] == tokenizer.pad_token_id).all() and ro.attention_mask[row, prompt_width + n:].sum() == 0
        assert stop not in response[:n - 1].tolist()
        assert response[n - 1] == stop or n == 6  # a stopped row keeps its stop token; others ran to max_gen_len
    assert model.training  # sampling ran in eval mode and put the mode back

    logprobs, _ = rl.response_logprobs(model, ro)
    for row, n in enumerate(lengths.tolist()):  # each row alone, without padding, through the model's own helper
        real = ro.input_ids[row][ro.attention_mask[row].bool()]
        alone = model.token_logprobs(real[None])[0, -n:]
        torch.testing.assert_close(logprobs[row, :n], alone, atol=1e-4, rtol=1e-4)
        assert (logprobs[row, n:] == 0).all()


def test_flags_and_from_weight_default():
    for module, own in [(train_ppo, ["--clip_epsilon", "--vf_coef", "--kl_coef", "--kl_estimator", "--gamma",
                                     "--lam", "--ppo_epochs", "--critic_lr_scale"]),
                        (train_grpo, ["--num_generations", "--beta", "--clip_epsilon", "--num_iterations"]),
                        (train_spo, ["--beta", "--rho_min", "--rho_max", "--d_half"])]:
        parser = module.get_parser()
        flags = set(parser._option_string_actions)
        assert {"--reasoning", "--reward", "--reward_model_path", "--reward_fn", "--trust_remote_code",
                "--max_gen_len", "--temperature", "--from_weight", "--from_resume", *own} <= flags
        for argv, expected in [([], "reason"), (["--reasoning", "0"], "full_sft"),
                               (["--reasoning", "0", "--from_weight", "dpo"], "dpo")]:
            args = parser.parse_args(argv)
            rl.finish_rl_args(args)
            assert args.from_weight == expected
    spo = train_spo.get_parser().parse_args([])
    grpo = train_grpo.get_parser().parse_args([])
    assert (grpo.batch_size, grpo.learning_rate, grpo.max_seq_len, grpo.max_gen_len, grpo.num_generations,
            grpo.beta) == (2, 8e-8, 66, 1536, 8, 0.02)
    assert (spo.learning_rate, spo.accumulation_steps) == (1e-7, 4)
    assert train_ppo.get_parser().parse_args([]).save_weight == "ppo_actor"


# -------------------------------------------------------------------------------------------- the scripts end to end

@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_grpo_script_on_the_bundled_prompts(warm, tmp_path):
    """The bundled demo prompts, default reward (rule + format), default start (reason), G samples."""
    proc = run_script("train_grpo.py", "--data_path", "dataset/demo/rlaif_demo.jsonl", "--save_dir", warm.out,
                      "--checkpoint_dir", tmp_path, "--max_steps", 2,
                      "--num_generations", 4, "--num_iterations", 2, "--max_gen_len", 6, "--learning_rate", 1e-3,
                      in_process=False)  # the script entry point itself
    assert "rlaif_demo.jsonl" in proc.stdout and f"loaded {warm.out / 'reason_64.pth'}" in proc.stdout
    assert "reward: rule + format" in proc.stdout
    for key in ("reward", "reward_std", "reward_rule", "reward_format", "kl", "clip_frac", "resp_len", "tokens/s"):
        assert f" {key} " in proc.stdout, proc.stdout
    assert (warm.out / "grpo_64.pth").is_file() and (warm.out / "grpo_64.json").is_file()
    assert torch.load(tmp_path / "grpo_64_resume.pth", weights_only=True)["step"] == 2


def test_grpo_under_bf16_autocast_as_on_cuda(warm, tmp_path, capsys):
    """CUDA trains the fp32 policy under bf16 autocast and samples rollouts inside it; --dtype bfloat16 on the CPU
    takes the same path (the rollout cache once had the wrong dtype there and the first rollout crashed)."""
    out = run_in_process(train_grpo, capsys, "--data_path", warm.prompts, "--save_dir", warm.out,
                         "--checkpoint_dir", tmp_path, "--max_steps", 1, "--num_generations", 2, "--max_gen_len", 6,
                         "--dtype", "bfloat16", "--save_weight", "grpo_bf16")
    assert "step 1/1" in out and " gen_tok_s " in out
    assert (warm.out / "grpo_bf16_64.pth").is_file()


def test_ppo_script_saves_actor_and_resumes_with_its_critic(warm, tmp_path, capsys):
    hook = tmp_path / "hooks.py"  # a user's reward on top of the rule reward: never all zero, so V must move
    hook.write_text("def longer_is_better(prompts, responses, **_):\n"
                    "    return [0.5 + 0.1 * len(r) for r in responses]\n", encoding="utf-8")
    common = ["--reasoning", "0", "--data_path", warm.prompts, "--save_dir", tmp_path / "out",
              "--checkpoint_dir", tmp_path / "ck", "--max_gen_len", 4, "--learning_rate", 1e-3, "--ppo_epochs", 2,
              "--kl_estimator", "k1", "--critic_lr_scale", 10, "--reward_fn", f"{hook}:longer_is_better"]
    shutil.copytree(warm.out, tmp_path / "out")
    proc = run_script("train_ppo.py", *common, "--max_steps", 2)
    assert f"loaded {tmp_path / 'out' / 'full_sft_64.pth'}" in proc.stdout
    assert "reward: rule + fn" in proc.stdout and " reward_fn " in proc.stdout and " value_loss " in proc.stdout
    assert (tmp_path / "out" / "ppo_actor_64.pth").is_file()
    state = torch.load(tmp_path / "ck" / "ppo_actor_64_resume.pth", weights_only=True)
    critic = state["extra"]["critic"]
    assert critic["value_head.weight"].abs().sum() > 0  # the zero-initialised head has trained
    assert len(state["optimizer"]["param_groups"]) == 2 and state["optimizer"]["param_groups"][1]["lr_scale"] == 10

    out = run_in_process(train_ppo, capsys, *common, "--max_steps", 4, "--from_resume", 1)
    assert "resumed from" in out and "step 3/4" in out and "step 1/" not in out
    resumed = torch.load(tmp_path / "ck" / "ppo_actor_64_resume.pth", weights_only=True)
    assert resumed["step"] == 4
    assert not torch.equal(resumed["extra"]["critic"]["value_head.weight"], critic["value_head.weight"])


def test_spo_script_with_a_reward_model_and_tracker_resume(warm, reward_model_dir, tmp_path, capsys):
    common = ["--reasoning", "0", "--data_path", warm.prompts, "--save_dir", warm.out,
              "--checkpoint_dir", tmp_path, "--max_gen_len", 4, "--learning_rate", 1e-3, "--accumulation_steps", 2,
              "--reward", "model", "--reward_model_path", reward_model_dir]
    proc = run_script("train_spo.py", *common, "--max_steps", 2)
    assert "reward: model" in proc.stdout and " reward_model " in proc.stdout and " baseline " in proc.stdout
    assert (warm.out / "spo_64.pth").is_file()
    tracker = torch.load(tmp_path / "spo_64_resume.pth", weights_only=True)["extra"]["value_tracker"]
    assert tracker["alpha"] != 1.0 and tracker["last_logprob"] is not None  # 4 batches folded in

    # one prompt batch per step now, so the logged baseline is the saved tracker's
    out = run_in_process(train_spo, capsys, *common, "--max_steps", 3, "--from_resume", 1, "--accumulation_steps", 1)
    first_baseline = float(re.search(r"step 3/3 .* baseline (-?[0-9.]+)", out).group(1))
    expected = train_spo.ValueTracker()
    expected.load_state_dict(tracker)
    assert first_baseline == pytest.approx(expected.baseline(), abs=1e-4)  # continues from the saved tracker


def test_grpo_learns_a_fixed_answer_on_cpu(warm, tmp_path, capsys):
    """From a policy that picks A-D at random, 16 rollouts of 4 prompts x 8 answers with 2 clipped updates each
    teach it to answer C. Over 12 seed pairs (warm start x GRPO) the mean rule reward of the first 3 rollouts was
    0.09-0.26 and of the last 3 0.77-0.91."""
    out = run_in_process(train_grpo, capsys, "--reasoning", "0", "--data_path", warm.prompts,
                         "--save_dir", warm.out, "--checkpoint_dir", tmp_path, "--max_seq_len", 48,
                         "--max_gen_len", 3, "--num_generations", 8, "--batch_size", 4, "--num_iterations", 2,
                         "--learning_rate", 3e-3, "--temperature", 1.0, "--max_steps", 32, "--save_interval", 100,
                         "--seed", 1)
    rewards = reward_lines(out)[::2]  # both updates of a rollout log the rollout's reward
    assert len(rewards) == 16
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert first < 0.4 and last > 0.65 and last > first + 0.4, rewards


DDP_DRIVER = """
import json, os, sys
sys.path[:0] = [{root!r}]
import importlib
from trainer import trainer_utils

finish = trainer_utils.Trainer.finish


def report_then_finish(self):  # what each rank ends with: sums of the trained weights, the tracker's state
    state = {{"policy": sum(float(p.detach().double().sum()) for p in self.model.parameters())}}
    for name, obj in self.extra_state.items():
        state[name] = obj.state_dict() if name == "value_tracker" else \
            sum(float(p.detach().double().sum()) for p in obj.parameters())
    # a file per rank: both ranks printing to one pipe can interleave a line (seen once on the CI machine)
    with open(os.path.join(os.environ["STATE_DIR"], f"state_{{self.ctx.rank}}.json"), "w") as f:
        json.dump(state, f)
    finish(self)


trainer_utils.Trainer.finish = report_then_finish
importlib.import_module("trainer." + sys.argv[1]).main(sys.argv[2:])
"""


def free_port() -> int:
    """A port nothing listens on now: fixed ports collide when two test runs share a machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["train_ppo", "train_spo"])
def test_two_processes_keep_critic_and_tracker_in_step(stage, warm, tmp_path):
    """torchrun with 2 CPU processes: each rank samples its own prompts, yet the critic (DDP-wrapped) and the SPO
    tracker (updated with means over ranks) end identical on both."""
    driver = tmp_path / "driver.py"
    driver.write_text(DDP_DRIVER.format(trainer=str(ROOT / "trainer"), root=str(ROOT)), encoding="utf-8")
    hook = tmp_path / "hook.py"  # rewards that differ between samples, so the ranks see different numbers
    hook.write_text("def by_length(responses, **_):\n    return [0.3 * len(r) for r in responses]\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", STATE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), str(driver), stage, *TINY, "--reasoning", "0",
                           "--data_path", str(warm.prompts), "--save_dir", str(warm.out),
                           "--checkpoint_dir", str(tmp_path / "ck"), "--max_gen_len", "4", "--max_steps", "2",
                           "--accumulation_steps", "2", "--learning_rate", "1e-3", "--temperature", "1.5",
                           "--reward_fn", f"{hook}:by_length"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    states = {rank: (tmp_path / f"state_{rank}.json").read_text() for rank in (0, 1)}
    assert states[0] == states[1], states
    extra = json.loads(states[0])
    assert ("critic" in extra) == (stage == "train_ppo") and ("value_tracker" in extra) == (stage == "train_spo")


# ------------------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("case", ["missing_reward_model", "wrong_head", "template_too_long", "system_too_long",
                                  "rule_without_answers", "one_generation"])
def test_bad_input_gives_clear_error(case, warm, tmp_path, capsys):
    args = ["--reasoning", "0", "--save_dir", warm.out, "--checkpoint_dir", tmp_path, "--max_gen_len", 2,
            "--max_steps", 1, "--data_path", warm.prompts]
    module, expect = train_grpo, None
    if case == "missing_reward_model":
        args += ["--reward", "model", "--reward_model_path", tmp_path / "internlm2-1_8b-reward"]
        expect = f"reward model folder not found: {tmp_path / 'internlm2-1_8b-reward'}"
    elif case == "wrong_head":
        from transformers import LlamaConfig, LlamaForCausalLM
        LlamaForCausalLM(LlamaConfig(vocab_size=6400, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "lm")
        args += ["--reward", "model", "--reward_model_path", tmp_path / "lm"]
        module, expect = train_ppo, "LlamaForCausalLM, which has no reward head"
    elif case == "template_too_long":
        args += ["--max_seq_len", 10]
        module, expect = train_spo, "--max_seq_len 10: the chat template around a prompt alone is"
    elif case == "system_too_long":
        rows = [{"conversations": [{"role": "system", "content": "很长的系统提示。" * 40},
                                   {"role": "user", "content": "问题"}, {"role": "assistant", "content": "C"}]}] * 4
        args[-1] = write_jsonl(tmp_path / "long.jsonl", rows)
        expect = "long.jsonl:"  # file and line, then: the prompt without its last user message is still N tokens
    elif case == "rule_without_answers":
        rows = [{"conversations": [{"role": "user", "content": "写一首诗"},
                                   {"role": "assistant", "content": ""}]}] * 4
        args[-1] = write_jsonl(tmp_path / "rlaif-mini.jsonl", rows)
        expect = "--reward rule needs a reference answer"
    elif case == "one_generation":
        args += ["--num_generations", 1]
        expect = "GRPO compares answers within a group"
    err = fails_in_process(module, capsys, *args)
    assert expect in err, err
    if case == "system_too_long":
        assert re.search(r"long\.jsonl:[1-4]: the prompt without its last user message is still \d+ tokens", err)
