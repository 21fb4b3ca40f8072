"""SPO: one answer per prompt, judged against a tracked baseline instead of a group (GRPO) or a critic (PPO).

advantage = reward - baseline, where the baseline is ValueTracker's running estimate of the expected reward
(a Beta estimate decayed faster when the policy moves, as in MiniMind's SPO); loss = -advantage * log pi averaged
over answer tokens + beta * k3 KL to the reference. The tracker is updated once per prompt batch with means over
all ranks (so every rank holds the same baseline) and travels in the resume checkpoint.

    python trainer/train_spo.py                            # bundled RL prompts, rule reward, from out/reason_512.pth
    python trainer/train_spo.py --reasoning 0 --reward model --reward_model_path ../internlm2-1_8b-reward \\
        --trust_remote_code 1                              # reward model, plain answers, from out/full_sft_512.pth
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import torch

from trainer import rl_utils as rl
from trainer.rl_rewards import REWARD_CLIP
from trainer.trainer_utils import Trainer, user_errors


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


def get_parser():
    parser = rl.build_rl_parser("MiniMind SPO / 单样本策略优化", save_weight="spo", learning_rate=1e-7,
                                accumulation_steps=4)
    add = parser.add_argument
    add("--beta", type=float, default=0.02, help="weight of the k3 KL to the reference model")
    add("--rho_min", type=float, default=0.5, help="fastest decay of the baseline (remembers ~2 batches)")
    add("--rho_max", type=float, default=0.96, help="slowest decay of the baseline (remembers ~25 batches)")
    add("--d_half", type=float, default=0.06,
        help="change of the mean answer log-prob between batches that halves the baseline's memory")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    with user_errors():
        ctx, log, model, tokenizer, dataset, reward, ref = rl.start_rl_stage(args)
        tracker = ValueTracker(args.rho_min, args.rho_max, args.d_half)
        trainer = Trainer(args, ctx, model, dataset, dataset.collate, log, extra_state={"value_tracker": tracker},
                          signal_keys=rl.signal_keys(reward))
        rl.log_run(args, log, beta=args.beta, rho=f"[{args.rho_min}, {args.rho_max}]")

        def make_rollout(batch):
            rollout = rl.collect_rollout(trainer, batch, tokenizer, args, 1, reward, ref)
            mask = rollout.response_mask
            with torch.no_grad(), ctx.autocast():
                logprobs, _ = rl.response_logprobs(trainer.model, rollout)
            baseline = tracker.baseline()  # from earlier batches only, so no answer is compared with itself
            rollout.advantages = rollout.rewards - baseline
            mean_reward, mean_logprob = rl.global_mean(
                [float(rollout.rewards.mean()), float(rl.masked_mean(logprobs, mask))], ctx)
            rho = tracker.update(mean_reward, mean_logprob)
            rollout.stats.update(baseline=baseline, rho=rho)
            return rollout

        def spo_loss(rollout, iteration):
            mask = rollout.response_mask
            logprobs, aux_loss = rl.response_logprobs(trainer.train_model, rollout)
            policy_loss = -rl.masked_mean(logprobs * rollout.advantages[:, None], mask)
            kl = rl.masked_mean(rl.kl_k3(logprobs, rollout.ref_logprobs), mask)
            return policy_loss + args.beta * kl + aux_loss, {"kl": float(kl.detach())}

        rl.train_rl(trainer, make_rollout, spo_loss)


if __name__ == "__main__":
    main()
