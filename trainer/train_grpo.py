"""GRPO: G sampled answers per prompt, each judged against its own group; no critic.

advantage_i = (r_i - mean of the group) / (std of the group + 1e-4), the same for every token of answer i;
loss = clipped ratio pi/pi_old times that advantage + beta * k3 KL to the reference, averaged over all answer
tokens. pi_old is the policy that sampled, so --num_iterations > 1 reuses each rollout for several clipped steps.

    python trainer/train_grpo.py                           # bundled RL prompts, rule reward, from out/reason_512.pth
    python trainer/train_grpo.py --reasoning 0 --reward model --reward_model_path ../internlm2-1_8b-reward \\
        --trust_remote_code 1                              # reward model, plain answers, from out/full_sft_512.pth
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import torch

from trainer import rl_utils as rl
from trainer.trainer_utils import Trainer, UserError, user_errors


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """(r - mean of its group) / (std of its group + eps) for consecutive groups of `group_size` samples.

    A group whose samples all scored the same gets advantage 0: it carries no signal about which is better.
    """
    groups = rewards.view(-1, group_size)
    mean, std = groups.mean(1, keepdim=True), groups.std(1, keepdim=True, unbiased=False)
    return ((groups - mean) / (std + eps)).view(-1)


def get_parser():
    parser = rl.build_rl_parser("MiniMind GRPO / 组相对策略优化", save_weight="grpo")
    add = parser.add_argument
    add("--num_generations", type=int, default=8, help="answers sampled per prompt (G), decoded from one prefill")
    add("--beta", type=float, default=0.02, help="weight of the k3 KL to the reference model")
    add("--clip_epsilon", type=float, default=0.2, help="ratio pi/pi_old is clipped to [1 - eps, 1 + eps]")
    add("--num_iterations", type=int, default=1, help="optimizer steps per rollout (MiniMind: 1)")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    with user_errors():
        if args.num_generations < 2:
            raise UserError(f"--num_generations {args.num_generations}: GRPO compares answers within a group; "
                            f"use 2 or more (MiniMind: 8), or train_spo.py for one answer per prompt")
        if args.num_iterations < 1:
            raise UserError(f"--num_iterations {args.num_iterations}: take at least one step per rollout")
        ctx, log, model, tokenizer, dataset, reward, ref = rl.start_rl_stage(args)
        trainer = Trainer(args, ctx, model, dataset, dataset.collate, log, updates_per_group=args.num_iterations,
                          signal_keys=rl.signal_keys(reward))
        rl.log_run(args, log, G=args.num_generations, beta=args.beta, updates_per_rollout=args.num_iterations)

        def make_rollout(batch):
            rollout = rl.collect_rollout(trainer, batch, tokenizer, args, args.num_generations, reward, ref)
            rollout.advantages = group_advantages(rollout.rewards, args.num_generations)
            return rollout

        def grpo_loss(rollout, iteration):
            logprobs, aux_loss = rl.response_logprobs(trainer.train_model, rollout)
            if iteration == 0:  # no step taken since the rollout: these are the sampling policy's log-probs
                rollout.old_logprobs = logprobs.detach()
            mask = rollout.response_mask
            policy_loss, clip_frac = rl.clipped_policy_loss(logprobs, rollout.old_logprobs, rollout.advantages,
                                                            mask, args.clip_epsilon)
            kl = rl.masked_mean(rl.kl_k3(logprobs, rollout.ref_logprobs), mask)
            return policy_loss + args.beta * kl + aux_loss, {"kl": float(kl.detach()), "clip_frac": float(clip_frac)}

        rl.train_rl(trainer, make_rollout, grpo_loss, iterations=args.num_iterations)


if __name__ == "__main__":
    main()
