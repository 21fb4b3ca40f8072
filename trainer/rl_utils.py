"""What the RL stages (train_ppo, train_grpo, train_spo) share: flags, rollouts, log-probs, KL, clipped loss, loop.

A stage script builds its parser with `build_rl_parser`, then calls `train_rl(trainer, make_rollout, loss_fn)`:
for every accumulation group of prompt batches it samples responses through the shared `Engine` (each prompt
prefilled once, G rows decoded from its KV cache), scores them, and takes `iterations` optimizer steps over the
group's rollouts. The scripts keep their own algorithm: GRPO's group advantages, PPO's critic and GAE, SPO's value
tracker, each loss; the rewards live in rl_rewards.py.

Tensor layout of a rollout of N rows: `input_ids` = prompt left-padded to P columns + response right-padded to R
columns. Every per-token quantity (log-probs, values, advantages, masks) is [N, R] over the response columns.
"""
import collections
import copy
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.distributed as dist

from dataset.lm_dataset import RLAIFDataset
from model.engine import Engine, SamplingParams
from trainer.rl_rewards import REWARDS, RewardSet
from trainer.trainer_utils import (
    Trainer,
    UserError,
    build_parser,
    load_frozen_model,
    pick_data_path,
    start_stage,
    stops_cleanly,
    unwrap,
)

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
    add = parser.add_argument_group("RL: rewards and sampling / 强化学习：奖励与采样").add_argument
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
    add("--answer_types", nargs="+", default=None,
        help="train only on prompts whose answer_type is one of these (choice, number, exact in the bundled "
             "prompts), e.g. number: the question types a small model already answers sometimes, so the reward "
             "has something to grow from; default: all prompts")
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
    prompts = RLAIFDataset(args.data_path, tokenizer, max_prompt_length=args.max_seq_len,
                           skip_bad_lines=bool(args.skip_bad_lines))
    if args.answer_types:
        prompts = PromptsOfTypes(prompts, args.answer_types)
        log(f"--answer_types {' '.join(args.answer_types)}: {len(prompts)} prompts")
    return prompts


class PromptsOfTypes(torch.utils.data.Subset):
    """The prompts whose answer_type is one of `types` (--answer_types); collates like the full set."""

    def __init__(self, prompts: RLAIFDataset, types: list):
        found = [prompts.reader[i][1] for i in range(len(prompts))]
        keep = [i for i, t in enumerate(found) if t in types]
        if not keep:
            have = ", ".join(f"{t or '(none)'} x {n}" for t, n in collections.Counter(found).most_common())
            raise UserError(f"--answer_types {' '.join(types)}: no prompt in {prompts.reader.path} has that "
                            f"answer_type (it has: {have}); pick from those or drop the flag")
        super().__init__(prompts, keep)
        self.collate = prompts.collate


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


_engine_slot: list = []  # [(policy, Engine)]: the last policy's engine, kept while it has CUDA graphs


def rollout_engine(policy, tokenizer) -> Engine:
    """The decoding engine for `policy`. With CUDA graphs it is kept across rollouts: its decoders' graphs read
    the weights in place (and the stacked q/k/v, gate/up copies, refreshed in place when a rollout starts), so
    optimizer steps need no new capture (and no new torch.compile)."""
    if _engine_slot and _engine_slot[0][0] is policy:
        return _engine_slot[0][1]
    engine = Engine(policy, pad_token_id=tokenizer.pad_token_id)
    _engine_slot[:] = [(policy, engine)] if engine.cuda_graphs else []
    return engine


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
        completions = rollout_engine(policy, tokenizer).generate(prompts, params, num_samples)
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
    positions' logits (`logprob_len`): for prompt 66 + response 1536 tokens that is 4% fewer vocab-sized rows than
    the full sequence. Zeroed padding keeps exp()/ratios of masked positions finite, so no NaN reaches the gradients.
    """
    out = model(rollout.input_ids, attention_mask=rollout.attention_mask, logprob_len=rollout.response_len)
    return out.token_logprobs * rollout.response_mask, out.aux_loss


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


def global_mean(values: list, ctx) -> list:
    """Means of floats over all ranks (every rank must call it), so rank-local state stays identical."""
    if not ctx.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return (t / ctx.world_size).tolist()


# ------------------------------------------------------------------------------------------------------------ the loop

def rollout_groups(trainer: Trainer):
    """Lists of prompt batches, one list per accumulation group, from the trainer's resumable data order."""
    group = []
    for batch, _, last_micro in trainer.micro_batches():
        group.append(batch)
        if last_micro:
            yield group
            group = []


@stops_cleanly  # Ctrl-C: save the last finished step, one line, exit 130
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
            means = {k: sum(d[k] for d in logged) / len(logged) for k in logged[0]}
            trainer.optimizer_step(means["loss"])  # a NaN/inf loss skips the update (or stops the run)
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


def signal_keys(reward: RewardSet) -> tuple:
    """What an RL run's learning signal line shows: the mean reward, each part of it when there are several (rule +
    format), the answer length and the KL to the reference."""
    parts = tuple(f"reward_{name}" for name in reward.parts) if len(reward.parts) > 1 else ()
    return ("reward", *parts, "resp_len", "kl")


def log_run(args, log: Callable, **extra) -> None:
    """One line with the settings that decide an RL run's cost and signal."""
    sizes = f"prompt <= {args.max_seq_len} tokens, response <= {args.max_gen_len} tokens"
    log(f"rl: {sizes}, temperature {args.temperature:g}, from {args.from_weight}"
        + "".join(f", {k} {v}" for k, v in extra.items()))

