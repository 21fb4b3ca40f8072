"""What the RL stages (train_ppo, train_grpo, train_spo) share: flags, rollouts, rewards, advantages, losses, the loop.

A stage script builds its parser with `build_rl_parser`, then calls `train_rl(trainer, make_rollout, loss_fn)`:
for every accumulation group of prompt batches it samples responses through the shared `Engine` (each prompt
prefilled once, G rows decoded from its KV cache), scores them, and takes `iterations` optimizer steps over the
group's rollouts. The scripts keep only their own algorithm: advantages, loss, and extra models (critic, tracker).

Tensor layout of a rollout of N rows: `input_ids` = prompt left-padded to P columns + response right-padded to R
columns. Every per-token quantity (log-probs, values, advantages, masks) is [N, R] over the response columns.
"""
import copy
import importlib
import importlib.util
import json
import re
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from trainer.trainer_utils import (ROOT, Trainer, UserError, build_parser, load_frozen_model, pick_data_path, repo_path,
                           start_stage, unwrap)

from dataset.lm_dataset import RLAIFDataset
from model.engine import Engine, SamplingParams
from model.model_minimind import MiniMindModel, gather_logprobs

# Rewards are clipped to [-3, 3] (MiniMind's scale for internlm2-1_8b-reward scores); SPO's tracker maps this
# range onto [0, 1].
REWARD_CLIP = 3.0
# MiniMind's RL defaults (trainer/train_grpo.py and friends): prompts cut to 66 tokens, 1536 generated tokens.
RL_DEFAULTS = dict(epochs=1, batch_size=2, learning_rate=8e-8, accumulation_steps=1, max_seq_len=66,
                   log_interval=1, save_interval=10)


# ----------------------------------------------------------------------------------------------------------------- CLI

def build_rl_parser(description: str, **defaults):
    """build_parser with MiniMind's RL defaults (overridable) plus the flags all three RL stages have."""
    parser = build_parser(description, **{**RL_DEFAULTS, **defaults})
    add_rl_arguments(parser)
    return parser


def add_rl_arguments(parser) -> None:
    """The flags all three RL stages have; `--max_seq_len` becomes the prompt length."""
    add = parser.add_argument
    add("--reasoning", type=int, default=1, choices=[0, 1],
        help="1 = the policy answers <think>...</think><answer>...</answer>: adds the format bonus, scores the "
             "<answer> part, starts from `reason`; 0 = plain answers, starts from `full_sft`")
    add("--reward", default="rule", choices=sorted(REWARDS),
        help="rule: check answers against the data's reference (offline); model: score with --reward_model_path; "
             "none: only --reward_fn (and the format bonus)")
    add("--reward_model_path", default=None,
        help="local folder of a Hugging Face sequence-classification reward model (e.g. internlm2-1_8b-reward)")
    add("--reward_fn", default=None,
        help="module:function or path/to/file.py:function, called as fn(prompts=, responses=, answers=, "
             "answer_types=) -> one float per response; added to --reward")
    add("--trust_remote_code", type=int, default=0, choices=[0, 1],
        help="1 = run the Python code shipped in --reward_model_path (internlm2-1_8b-reward needs it)")
    add("--max_gen_len", type=int, default=1536, help="most tokens generated per response")
    add("--temperature", type=float, default=0.8, help="sampling temperature of the rollouts")
    parser.set_defaults(from_weight=None)
    for action in parser._actions:  # the shared flag means something else here
        if action.dest == "max_seq_len":
            action.help = "most prompt tokens; longer prompts lose text from the left of the user message"
        if action.dest == "from_weight":
            action.help = "stage weights to start from; default: reason with --reasoning 1, else full_sft"


def finish_rl_args(args) -> None:
    """Defaults that depend on other flags, and checks that need no model."""
    if args.from_weight is None:
        args.from_weight = "reason" if args.reasoning else "full_sft"
    if args.max_gen_len < 1:
        raise UserError(f"--max_gen_len {args.max_gen_len}: generate at least one token")
    if args.temperature < 0:
        raise UserError(f"--temperature {args.temperature}: must be >= 0 (0 = greedy)")
    if args.reward == "model" and not args.reward_model_path:
        raise UserError("--reward model needs --reward_model_path FOLDER (a local Hugging Face reward model, "
                        "e.g. internlm2-1_8b-reward); or use --reward rule, which works offline")
    if args.reward == "none" and not args.reward_fn:
        raise UserError("--reward none leaves nothing to learn from: pass --reward_fn module:function")


def load_prompts(args, tokenizer, log: Callable) -> RLAIFDataset:
    """RLAIF prompts: --data_path, else MiniMind's rlaif-mini.jsonl in dataset/, else the bundled demo."""
    args.data_path = str(pick_data_path(args.data_path, "rlaif-mini.jsonl", "rlaif_demo.jsonl"))
    log(f"data: {args.data_path}")
    template = tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=False,
                                             add_generation_prompt=True)
    bare = len(tokenizer(template, add_special_tokens=False)["input_ids"])
    if args.max_seq_len <= bare:
        raise UserError(f"--max_seq_len {args.max_seq_len}: the chat template around a prompt alone is {bare} "
                        f"tokens; allow at least {bare + 1} (MiniMind uses 66)")
    return RLAIFDataset(args.data_path, tokenizer, max_prompt_length=args.max_seq_len,
                        skip_bad_lines=bool(args.skip_bad_lines))


def start_rl_stage(args):
    """Everything an RL stage starts from: context, logger, policy, tokenizer, prompts, reward, reference model.

    Checks that need no model come first, so a bad flag fails before anything loads.
    """
    finish_rl_args(args)
    ctx, log, model, tokenizer = start_stage(args)
    check_lengths(args, model)
    dataset = load_prompts(args, tokenizer, log)
    reward = RewardSet(args, ctx, log)
    return ctx, log, model, tokenizer, dataset, reward, reference_model(args, model, ctx, log)


def reference_model(args, policy, ctx, log: Callable):
    """The frozen policy the KL term pulls towards: `--from_weight` again (an unmodified copy when it is none)."""
    if args.from_weight and args.from_weight != "none":
        return load_frozen_model(args, args.from_weight, ctx, log)
    ref = copy.deepcopy(unwrap(policy)).eval()
    return ref.requires_grad_(False)


# ------------------------------------------------------------------------------------------------------------ rollouts

@dataclass
class Rollout:
    """N = prompts x samples rows of prompt + response, with everything the losses need."""
    input_ids: torch.Tensor  # [N, P + R]
    attention_mask: torch.Tensor  # [N, P + R]
    response_mask: torch.Tensor  # [N, R] float, 1 on generated tokens including the closing <|im_end|>
    prompts: list  # rendered prompt text per row
    responses: list  # decoded response text per row (special tokens dropped)
    answers: list
    answer_types: list
    num_samples: int
    stats: dict = field(default_factory=dict)  # floats logged for this rollout
    rewards: Optional[torch.Tensor] = None  # [N]
    ref_logprobs: Optional[torch.Tensor] = None  # [N, R]
    old_logprobs: Optional[torch.Tensor] = None  # [N, R], the policy that sampled (fixed during the updates)
    advantages: Optional[torch.Tensor] = None  # [N] or [N, R]
    extra: dict = field(default_factory=dict)  # a stage's own tensors (PPO returns, ...)

    @property
    def response_len(self) -> int:
        return self.response_mask.shape[1]

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def sample_rollout(model, tokenizer, batch: dict, args, num_samples: int, ctx) -> Rollout:
    """Decode `num_samples` responses per prompt with the KV-cached engine, in eval mode, without grad.

    Each prompt is prefilled once and its cache copied to its G rows. A response that stopped keeps its
    <|im_end|>, so the policy is also trained on when to stop; one cut at --max_gen_len has none.
    """
    policy = unwrap(model)
    was_training = policy.training
    policy.eval()
    prompts = [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    params = SamplingParams(max_new_tokens=args.max_gen_len, temperature=args.temperature)
    start = time.perf_counter()
    with ctx.autocast():
        completions = Engine(policy, pad_token_id=tokenizer.pad_token_id).generate(prompts, params, num_samples)
    seconds = time.perf_counter() - start  # the token ids are on the host, so the device is done
    policy.train(was_training)

    eos = policy.config.eos_token_id
    tokens = [c.token_ids + ([eos] if c.finish_reason == "stop" else []) for c in completions]
    n, width = len(tokens), max(len(t) for t in tokens)
    response = torch.full((n, width), tokenizer.pad_token_id, dtype=torch.long)
    response_mask = torch.zeros((n, width))
    for row, t in enumerate(tokens):
        response[row, :len(t)] = torch.tensor(t, dtype=torch.long)
        response_mask[row, :len(t)] = 1
    device = batch["input_ids"].device
    input_ids = torch.cat([batch["input_ids"].repeat_interleave(num_samples, 0), response.to(device)], 1)
    attention_mask = torch.cat([batch["attention_mask"].repeat_interleave(num_samples, 0),
                                response_mask.long().to(device)], 1)
    generated = sum(len(c.token_ids) for c in completions)
    repeat = lambda values: [v for v in values for _ in range(num_samples)]  # noqa: E731
    return Rollout(input_ids=input_ids, attention_mask=attention_mask, response_mask=response_mask.to(device),
                   prompts=repeat(batch["prompt"]), answers=repeat(batch["answer"]),
                   answer_types=repeat(batch["answer_type"]), num_samples=num_samples,
                   responses=tokenizer.batch_decode([c.token_ids for c in completions], skip_special_tokens=True),
                   stats={"resp_len": float(response_mask.sum(1).mean()),
                          "gen_tok_s": generated / seconds if seconds > 0 else 0.0})


def collect_rollout(trainer: Trainer, batch: dict, tokenizer, args, num_samples: int, reward, ref) -> Rollout:
    """Sample from the current policy, score the answers, and add the reference model's log-probs."""
    rollout = sample_rollout(trainer.model, tokenizer, batch, args, num_samples, trainer.ctx)
    score_rollout(rollout, reward)
    with torch.no_grad(), trainer.ctx.autocast():
        rollout.ref_logprobs, _ = response_logprobs(ref, rollout)
    return rollout


def response_logprobs(model, rollout: Rollout):
    """log p(response token | everything before it) under `model`: ([N, R], MoE aux loss), padding set to 0.

    The one place the RL stages get log-probs from (policy with grad, old policy and reference without). It
    calls the model itself (through DDP when wrapped, so gradients synchronise) and keeps only the R + 1 last
    positions' logits: for prompt 66 + response 1536 tokens that is 4% fewer vocab-sized rows than the full
    sequence. Zeroed padding keeps exp()/ratios of masked positions finite, so no NaN reaches the gradients.
    """
    r = rollout.response_len
    out = model(rollout.input_ids, attention_mask=rollout.attention_mask, logits_to_keep=r + 1)
    logprobs = gather_logprobs(out.logits[:, :-1], rollout.input_ids[:, -r:])
    return logprobs * rollout.response_mask, out.aux_loss


# ------------------------------------------------------------------------------------------------------------- rewards

FORMAT_PATTERN = re.compile(r"^<think>\n.*?\n</think>\n\n?<answer>\n.*?\n</answer>$", re.S)
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
EDGE_PUNCTUATION = " \t\r\n。.，,！!？?；;：:、\"'“”‘’「」《》()（）"


def format_reward(responses: list, **_) -> list:
    """Reasoning format bonus in [0, 1]: 0.5 for the whole template, 0.125 per tag that appears exactly once."""
    tags = ("<think>", "</think>", "<answer>", "</answer>")
    return [0.5 * bool(FORMAT_PATTERN.match(r.strip())) + 0.125 * sum(r.count(t) == 1 for t in tags)
            for r in responses]


def final_answer(response: str, reasoning: bool) -> str:
    """The part of a response that is checked: the <answer> content in reasoning mode (else what follows
    </think>), the whole response otherwise."""
    if reasoning:
        tagged = ANSWER_TAG.search(response)
        if tagged:
            return tagged.group(1)
        return response.split("</think>")[-1]
    return response


def is_correct(response: str, answer: str, answer_type: str) -> bool:
    """Checkable answers of the bundled prompts (dataset/demo/rlaif_demo.jsonl: 850 exact, 400 choice, 250 number).

    choice: the standalone capital letters in the response must be exactly the reference letter ("C", "选C。");
    number: every number in it must equal the reference ("8", "8画"; not "8 或 10");
    exact (and any other type): equal after trimming spaces and punctuation at both ends.
    """
    if answer_type == "choice":
        letters = set(re.findall(r"(?<![A-Za-z])[A-Z](?![A-Za-z])", response))
        return letters == {answer.strip().upper()}
    if answer_type == "number":
        numbers = re.findall(r"-?\d+(?:\.\d+)?", response)
        try:
            target = float(answer)
        except ValueError:
            return False
        return bool(numbers) and all(float(x) == target for x in numbers)
    return response.strip(EDGE_PUNCTUATION) == answer.strip(EDGE_PUNCTUATION)


class RuleReward:
    """1.0 when the response's answer matches the reference answer of the prompt, else 0.0 (works offline)."""

    def __init__(self, args, ctx, log):
        self.reasoning = bool(args.reasoning)
        self.data_path = args.data_path

    def __call__(self, responses, answers, answer_types, **_) -> list:
        if not all(a.strip() for a in answers):
            raise UserError(f"--reward rule needs a reference answer (a last assistant message) for every prompt, "
                            f"and {self.data_path} has prompts without one (MiniMind's rlaif-mini.jsonl has none); "
                            f"use --reward model --reward_model_path FOLDER or --reward_fn module:function")
        return [float(is_correct(final_answer(r, self.reasoning), a, t))
                for r, a, t in zip(responses, answers, answer_types)]


CHATML_TURN = re.compile(r"<\|im_start\|>(system|user|assistant|tool)\n(.*?)<\|im_end\|>", re.S)


def chatml_messages(prompt: str) -> list:
    """The messages of a rendered ChatML prompt, to re-render them with the reward model's own template."""
    return [{"role": role, "content": content} for role, content in CHATML_TURN.findall(prompt)]


class ModelReward:
    """Scores from a local Hugging Face reward model, batched, clipped to [-3, 3].

    Sequence-classification models with one output (`*ForSequenceClassification`, num_labels=1) run through
    transformers; models that ship their own scoring code (internlm2-1_8b-reward: `AutoModel` + `get_scores`)
    need --trust_remote_code 1. In reasoning mode the score is 0.4 x (whole response) + 0.6 x (<answer> part),
    as in MiniMind.
    """
    chunk = 16  # texts per reward-model forward

    def __init__(self, args, ctx, log):
        path = repo_path(args.reward_model_path)
        self.device, self.reasoning = ctx.device, bool(args.reasoning)
        config = self._read_config(path, bool(args.trust_remote_code))
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
        dtype = torch.float32 if ctx.device.type == "cpu" else ctx.dtype
        archs = config.get("architectures") or []
        remote = config.get("auto_map", {})
        kwargs = dict(trust_remote_code=bool(args.trust_remote_code), dtype=dtype)
        if any(a.endswith("ForSequenceClassification") for a in archs) or \
                "AutoModelForSequenceClassification" in remote:
            model, info = AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True,
                                                                             **kwargs)
            head = [k for k in info["missing_keys"] if "score" in k or "classifier" in k]
            if head:
                raise UserError(f"{path}: the reward head {head[:2]} is not in the weight files; the folder holds "
                                f"an untrained classifier, not a reward model")
            if model.config.num_labels != 1:
                raise UserError(f"{path}: the model gives {model.config.num_labels} scores per text "
                                f"(num_labels={model.config.num_labels}); a reward model gives one (num_labels=1)")
            self.scorer = "classifier"
        elif "AutoModel" in remote:  # its own class and scoring code (internlm2-1_8b-reward)
            model = AutoModel.from_pretrained(path, **kwargs)
            if not hasattr(model, "get_scores"):
                raise UserError(f"{path}: {type(model).__name__} has no get_scores(tokenizer, chats) method")
            self.scorer = "get_scores"
        else:
            raise UserError(f"{path} holds a {'/'.join(archs) or 'model without architectures'}, which has no "
                            f"reward head; --reward model needs a sequence-classification reward model (one "
                            f"score per text, num_labels=1), e.g. internlm2-1_8b-reward")
        self.model = model.to(ctx.device).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=bool(args.trust_remote_code))
        if self.scorer == "classifier":
            self.tokenizer.padding_side = "right"
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            if self.model.config.pad_token_id is None:  # HF pools each row's last non-pad token
                self.model.config.pad_token_id = self.tokenizer.pad_token_id
            self.max_length = min(getattr(self.model.config, "max_position_embeddings", 2048) or 2048, 8192)
        log(f"reward model: {path} ({type(self.model).__name__}, {self.scorer})")

    @staticmethod
    def _read_config(path: Path, trust_remote_code: bool) -> dict:
        if not path.is_dir():
            raise UserError(f"reward model folder not found: {path}\n  download one, e.g. "
                            f"`modelscope download --model Shanghai_AI_Laboratory/internlm2-1_8b-reward "
                            f"--local_dir {path}`, or use --reward rule (offline)")
        config_file = path / "config.json"
        if not config_file.is_file():
            raise UserError(f"{path} has no config.json: not a Hugging Face model folder")
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if config.get("auto_map") and not trust_remote_code:
            raise UserError(f"{path} runs its own Python code (auto_map in config.json: "
                            f"{', '.join(config['auto_map'])}); read it, then pass --trust_remote_code 1")
        return config

    def _render(self, messages: list) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)

    @torch.no_grad()
    def score(self, chats: list) -> torch.Tensor:
        scores = []
        for i in range(0, len(chats), self.chunk):
            part = chats[i:i + self.chunk]
            if self.scorer == "get_scores":
                got = self.model.get_scores(self.tokenizer, part)
                scores += got if isinstance(got, (list, tuple)) else [got]
                continue
            enc = self.tokenizer([self._render(c) for c in part], return_tensors="pt", padding=True,
                                 truncation=True, max_length=self.max_length).to(self.device)
            scores += self.model(**enc).logits[:, 0].float().tolist()
        return torch.tensor(scores, dtype=torch.float32).clamp(-REWARD_CLIP, REWARD_CLIP)

    def __call__(self, prompts, responses, **_) -> list:
        history = [chatml_messages(p) for p in prompts]
        score = self.score([h + [{"role": "assistant", "content": r}] for h, r in zip(history, responses)])
        if self.reasoning:
            for i, r in enumerate(responses):
                tagged = ANSWER_TAG.search(r)
                if tagged:
                    answer = self.score([history[i] + [{"role": "assistant", "content": tagged.group(1).strip()}]])
                    score[i] = 0.4 * score[i] + 0.6 * answer[0]
        return score.tolist()


def load_reward_fn(spec: str) -> Callable:
    """`module:function` (importable from the repository or the current folder) or `path/file.py:function`."""
    module_name, _, name = spec.rpartition(":")
    if not module_name or not name:
        raise UserError(f"--reward_fn {spec}: write it as module:function or path/to/file.py:function")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser()
            path = path if path.is_file() else repo_path(module_name)
            if not path.is_file():
                raise UserError(f"--reward_fn {spec}: file not found: {path}")
            loader = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            for folder in (str(Path.cwd()), str(ROOT)):
                if folder not in sys.path:
                    sys.path.append(folder)
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"--reward_fn {spec}: cannot import {module_name}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise UserError(f"--reward_fn {spec}: {module_name} has no function {name}")
    return fn


# name -> class built with (args, ctx, log), called with prompts=, responses=, answers=, answer_types=
REWARDS = {"rule": RuleReward, "model": ModelReward, "none": None}


class RewardSet:
    """Sum of the chosen reward, the --reward_fn hook and (reasoning) the format bonus, clipped to [-3, 3]."""

    def __init__(self, args, ctx, log: Callable):
        self.parts = {}
        if REWARDS[args.reward] is not None:
            self.parts[args.reward] = REWARDS[args.reward](args, ctx, log)
        if args.reward_fn:
            self.parts["fn"] = load_reward_fn(args.reward_fn)
        if args.reasoning:
            self.parts["format"] = format_reward
        log(f"reward: {' + '.join(self.parts)}, clipped to [-{REWARD_CLIP:g}, {REWARD_CLIP:g}]")

    def __call__(self, rollout: Rollout) -> tuple[torch.Tensor, dict]:
        """Rewards [N] on the rollout's device, and each component's mean for the log."""
        samples = dict(prompts=rollout.prompts, responses=rollout.responses, answers=rollout.answers,
                       answer_types=rollout.answer_types)
        total, means = torch.zeros(len(rollout.responses)), {}
        for name, fn in self.parts.items():
            try:
                values = torch.as_tensor(fn(**samples), dtype=torch.float32).reshape(-1)
            except TypeError as e:
                raise UserError(f"reward '{name}' failed: {e}\n  a reward function is called as fn(prompts=, "
                                f"responses=, answers=, answer_types=) and returns one float per response") from None
            if len(values) != len(total) or not torch.isfinite(values).all():
                raise UserError(f"reward '{name}' returned {len(values)} values (finite: "
                                f"{bool(torch.isfinite(values).all())}) for {len(total)} responses")
            total += values
            means[f"reward_{name}"] = float(values.mean())
        return total.clamp(-REWARD_CLIP, REWARD_CLIP).to(rollout.input_ids.device), means


def score_rollout(rollout: Rollout, reward: RewardSet) -> None:
    """Fill rollout.rewards and log their mean, spread and components."""
    rollout.rewards, means = reward(rollout)
    rollout.stats.update(reward=float(rollout.rewards.mean()),
                         reward_std=float(rollout.rewards.std()) if len(rollout.rewards) > 1 else 0.0, **means)


# ---------------------------------------------------------------------------------------------------------- estimators

def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the entries where mask is 1 (answer tokens); 0 when there are none."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """log pi/pi_ref per sampled token: unbiased for KL(pi || pi_ref) under samples of pi, but signed per token."""
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """(r - 1) - log r with r = pi_ref/pi (Schulman's k3): unbiased, never negative, lower variance than k1."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1


KL_ESTIMATORS = {"k1": kl_k1, "k3": kl_k3}


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """(r - mean of its group) / (std of its group + eps) for consecutive groups of `group_size` samples.

    A group whose samples all scored the same gets advantage 0: it carries no signal about which is better.
    """
    groups = rewards.view(-1, group_size)
    mean, std = groups.mean(1, keepdim=True), groups.std(1, keepdim=True, unbiased=False)
    return ((groups - mean) / (std + eps)).view(-1)


def clipped_policy_loss(logprobs, old_logprobs, advantages, mask, clip_epsilon: float):
    """PPO's clipped surrogate, averaged over all response tokens of the batch; also the fraction clipped.

    advantages are [N] (one per sequence) or [N, R] (per token). With old_logprobs = logprobs.detach() (the
    first update after a rollout) the ratio is 1 and this is the plain policy gradient.
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = torch.clamp(ratio, 1 - clip_epsilon, 1 + clip_epsilon)
    loss = -torch.min(ratio * advantages, clipped * advantages)
    clip_frac = masked_mean(((ratio - 1).abs() > clip_epsilon).float(), mask)
    return masked_mean(loss, mask), clip_frac.detach()


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over response tokens: (advantages, returns), both [N, R].

    delta_t = r_t + gamma * V_{t+1} - V_t (V after the last response token is 0: the episode ends),
    A_t = delta_t + gamma * lam * A_{t+1}, returns = A + V. Masked positions get 0.
    """
    n, length = rewards.shape
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(n, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(length)):
        going_on = mask[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        next_value = values[:, t + 1] * going_on if t + 1 < length else 0.0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * going_on * running
        advantages[:, t] = running * mask[:, t]
    return advantages, (advantages + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance over the masked entries (PPO's advantage normalisation); masked entries -> 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def sequence_rewards_at_end(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N] sequence rewards placed on each response's last token: an [N, R] per-token reward."""
    last = (mask.sum(1).long() - 1).clamp(min=0)
    out = torch.zeros_like(mask)
    out[torch.arange(len(rewards), device=mask.device), last] = rewards.to(mask.dtype)
    return out


def global_mean(values: list, ctx) -> list:
    """Means of floats over all ranks (every rank must call it), so rank-local state stays identical."""
    if not ctx.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return (t / ctx.world_size).tolist()


# -------------------------------------------------------------------------------------------------- critic and tracker

class ValueModel(nn.Module):
    """PPO's critic: a MiniMind trunk with a scalar head, V(prefix) for every position.

    Starts as a copy of the policy's trunk (it already reads the text) with a zero head (V = 0 at first).
    """

    def __init__(self, config):
        super().__init__()
        self.model = MiniMindModel(config)
        self.value_head = nn.Linear(config.hidden_size, 1, bias=False)
        nn.init.zeros_(self.value_head.weight)

    @classmethod
    def from_policy(cls, policy) -> "ValueModel":
        policy = unwrap(policy)
        critic = cls(policy.config)
        critic.model.load_state_dict(policy.model.state_dict())
        return critic.to(next(policy.parameters()).device)

    def forward(self, input_ids, attention_mask, response_mask):
        """([N, R] values of the states before each response token, MoE aux loss) for a rollout's tensors."""
        hidden, _, aux_loss = self.model(input_ids, attention_mask=attention_mask)
        values = self.value_head(hidden[:, -response_mask.shape[1] - 1:-1]).squeeze(-1).float()
        return values * response_mask, aux_loss


class ValueTracker:
    """SPO's baseline: a Beta(alpha, beta) estimate of the expected reward, decayed faster when the policy moves.

    Rewards are mapped from [-3, 3] onto [0, 1]; each batch adds its mean as alpha += p, beta += 1 - p after
    decaying both by rho = 2^(-D / d_half), clipped to [rho_min, rho_max], where D is how far the mean response
    log-prob moved since the previous batch (rho_max when nothing moved). At rho = 0.96 the tracker remembers
    about 1 / (1 - 0.96) = 25 batches; at 0.5, 2. It starts at alpha = beta = 0.5 / (1 - rho_min) (baseline 0).
    """

    def __init__(self, rho_min: float = 0.5, rho_max: float = 0.96, d_half: float = 0.06):
        self.rho_min, self.rho_max, self.d_half = rho_min, rho_max, d_half
        self.alpha = self.beta = 0.5 / (1.0 - rho_min)
        self.last_logprob = None

    def baseline(self) -> float:
        """Expected reward in reward units."""
        return (self.alpha / (self.alpha + self.beta)) * 2 * REWARD_CLIP - REWARD_CLIP

    def rho(self, mean_logprob: float) -> float:
        moved = 0.0 if self.last_logprob is None else abs(mean_logprob - self.last_logprob)
        return min(max(2 ** (-moved / self.d_half), self.rho_min), self.rho_max)

    def update(self, mean_reward: float, mean_logprob: float) -> float:
        """Fold in one batch (means over all ranks, see `global_mean`); returns the rho used."""
        rho = self.rho(mean_logprob)
        p = (min(max(mean_reward, -REWARD_CLIP), REWARD_CLIP) + REWARD_CLIP) / (2 * REWARD_CLIP)
        self.alpha = rho * self.alpha + p
        self.beta = rho * self.beta + (1 - p)
        self.last_logprob = mean_logprob
        return rho

    def state_dict(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "last_logprob": self.last_logprob}

    def load_state_dict(self, state: dict) -> None:
        self.alpha, self.beta, self.last_logprob = state["alpha"], state["beta"], state["last_logprob"]


def wrap_ddp(module: nn.Module, ctx):
    """An extra trained model (the critic) in DDP like the policy, so its gradients are averaged too."""
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel
    ids = [ctx.device.index] if ctx.device.type in ("cuda", "npu") else None
    return DistributedDataParallel(module, device_ids=ids)


# ------------------------------------------------------------------------------------------------------------ the loop

def rollout_groups(trainer: Trainer):
    """Lists of prompt batches, one list per accumulation group, from the trainer's resumable data order."""
    group = []
    for batch, _, last_micro in trainer.micro_batches():
        group.append(batch)
        if last_micro:
            yield group
            group = []


def train_rl(trainer: Trainer, make_rollout: Callable, loss_fn: Callable, iterations: int = 1,
             extra_ddp: tuple = ()) -> Trainer:
    """Roll out each accumulation group, then take `iterations` optimizer steps over its rollouts.

    make_rollout(batch) -> Rollout (sampled, scored, with whatever the loss needs that is fixed at rollout time);
    loss_fn(rollout, iteration) -> (loss, {name: float}), run under autocast, called with iteration 0..k-1.
    The logged numbers are means over the group. `extra_ddp` are other DDP-wrapped trained models (the critic),
    whose gradient all-reduce is also skipped on all but the last micro-batch.
    """
    ctx = trainer.ctx
    if iterations > 1 and trainer.args.save_interval % iterations:
        trainer.log(f"note: --save_interval {trainer.args.save_interval} is not a multiple of the {iterations} "
                    f"updates per rollout; a resume from a save taken between them skips that rollout's rest")
    for batches in rollout_groups(trainer):
        rollouts = [make_rollout(batch) for batch in batches]
        for iteration in range(iterations):
            logged = []
            for i, rollout in enumerate(rollouts):
                last = i == len(rollouts) - 1
                with ExitStack() as stack:
                    stack.enter_context(trainer.no_sync(last))
                    for module in extra_ddp:
                        if ctx.distributed and not last:
                            stack.enter_context(module.no_sync())
                    with ctx.autocast():
                        loss, parts = loss_fn(rollout, iteration)
                    trainer.backward(loss / len(rollouts))
                trainer.count_tokens(rollout.num_tokens)
                logged.append({**rollout.stats, **parts, "loss": float(loss.detach())})
            trainer.optimizer_step()
            means = {k: sum(d[k] for d in logged) / len(logged) for k in logged[0]}
            trainer.after_step(means.pop("loss"), means)
            if trainer.done:
                break
    trainer.finish()
    return trainer


def check_lengths(args, model) -> None:
    """Prompt + generation must fit the model's positions (32768 for MiniMind2)."""
    limit = unwrap(model).config.max_position_embeddings
    if args.max_seq_len + args.max_gen_len > limit:
        raise UserError(f"--max_seq_len {args.max_seq_len} + --max_gen_len {args.max_gen_len} exceeds the model's "
                        f"{limit} positions")


def log_run(args, log: Callable, **extra) -> None:
    """One line with the settings that decide an RL run's cost and signal."""
    sizes = f"prompt <= {args.max_seq_len} tokens, response <= {args.max_gen_len} tokens"
    log(f"rl: {sizes}, temperature {args.temperature:g}, from {args.from_weight}"
        + "".join(f", {k} {v}" for k, v in extra.items()))

