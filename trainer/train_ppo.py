"""PPO: an actor and a critic; per-token rewards, GAE advantages, a clipped ratio and a value loss.

Per answer token t: reward_t = -kl_coef * KL_t(policy that sampled || reference) (k1 or k3), plus the answer's
score on its last token. The critic (a MiniMind trunk with a value head, resumed with the run) gives V_t; GAE
(--gamma, --lam) turns rewards and values into advantages, whitened over the batch. loss = clipped surrogate
(ratio pi/pi_old, --clip_epsilon) + vf_coef * 0.5 * (V - return)^2. pi_old, the advantages and the returns are
fixed at rollout time, so --ppo_epochs > 1 takes several clipped steps on one rollout.

    python trainer/train_ppo.py                            # bundled RL prompts, rule reward, from out/reason_512.pth
    python trainer/train_ppo.py --reasoning 0 --reward model --reward_model_path ../internlm2-1_8b-reward \\
        --trust_remote_code 1                              # reward model, plain answers, from out/full_sft_512.pth
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import torch
from torch import nn

from model.model_minimind import MiniMindModel
from trainer import rl_utils as rl
from trainer.trainer_utils import Trainer, UserError, unwrap, user_errors


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
    mean = rl.masked_mean(x, mask)
    var = rl.masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def sequence_rewards_at_end(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N] sequence rewards placed on each response's last token: an [N, R] per-token reward."""
    last = (mask.sum(1).long() - 1).clamp(min=0)
    out = torch.zeros_like(mask)
    out[torch.arange(len(rewards), device=mask.device), last] = rewards.to(mask.dtype)
    return out


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


def wrap_ddp(module: nn.Module, ctx):
    """An extra trained model (the critic) in DDP like the policy, so its gradients are averaged too."""
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel
    ids = [ctx.device.index] if ctx.device.type in ("cuda", "npu") else None
    return DistributedDataParallel(module, device_ids=ids)


def get_parser():
    parser = rl.build_rl_parser("MiniMind PPO / 近端策略优化", save_weight="ppo_actor")
    add = parser.add_argument
    add("--clip_epsilon", type=float, default=0.1, help="ratio pi/pi_old is clipped to [1 - eps, 1 + eps]")
    add("--vf_coef", type=float, default=0.5, help="weight of the critic's value loss")
    add("--kl_coef", type=float, default=0.02, help="per-token KL penalty to the reference, subtracted from rewards")
    add("--kl_estimator", default="k3", choices=sorted(rl.KL_ESTIMATORS),
        help="k1 = log(pi/pi_ref), signed per token; k3 = r - 1 - log r with r = pi_ref/pi, never negative")
    add("--gamma", type=float, default=1.0, help="discount over answer tokens")
    add("--lam", type=float, default=0.95, help="GAE lambda: 1 = Monte-Carlo returns, 0 = one-step TD")
    add("--ppo_epochs", type=int, default=1, help="optimizer steps per rollout (MiniMind: 1)")
    add("--critic_lr_scale", type=float, default=1.0, help="critic learning rate = this x --learning_rate")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    with user_errors():
        if args.ppo_epochs < 1:
            raise UserError(f"--ppo_epochs {args.ppo_epochs}: take at least one step per rollout")
        ctx, log, model, tokenizer, dataset, reward, ref = rl.start_rl_stage(args)
        critic = ValueModel.from_policy(model)
        groups = [{"params": list(model.parameters())},
                  {"params": list(critic.parameters()), "lr_scale": args.critic_lr_scale}]
        trainer = Trainer(args, ctx, model, dataset, dataset.collate, log, param_groups=groups,
                          extra_state={"critic": critic}, updates_per_group=args.ppo_epochs,
                          signal_keys=rl.signal_keys(reward))
        train_critic = wrap_ddp(critic, ctx)
        rl.log_run(args, log, kl=f"{args.kl_estimator} x {args.kl_coef}", gamma=args.gamma, lam=args.lam,
                   updates_per_rollout=args.ppo_epochs)

        def make_rollout(batch):
            rollout = rl.collect_rollout(trainer, batch, tokenizer, args, 1, reward, ref)
            mask = rollout.response_mask
            with torch.no_grad(), ctx.autocast():
                rollout.old_logprobs, _ = rl.response_logprobs(trainer.model, rollout)
                values, _ = critic(rollout.input_ids, rollout.attention_mask, mask)
            kl = rl.KL_ESTIMATORS[args.kl_estimator](rollout.old_logprobs, rollout.ref_logprobs) * mask
            token_rewards = sequence_rewards_at_end(rollout.rewards, mask) - args.kl_coef * kl
            advantages, rollout.extra["returns"] = gae(token_rewards, values, mask, args.gamma, args.lam)
            rollout.advantages = whiten(advantages, mask)
            rollout.stats.update(kl=float(rl.masked_mean(kl, mask)), value=float(rl.masked_mean(values, mask)))
            return rollout

        def ppo_loss(rollout, iteration):
            mask = rollout.response_mask
            logprobs, aux_loss = rl.response_logprobs(trainer.train_model, rollout)
            policy_loss, clip_frac = rl.clipped_policy_loss(logprobs, rollout.old_logprobs, rollout.advantages,
                                                            mask, args.clip_epsilon)
            values, critic_aux = train_critic(rollout.input_ids, rollout.attention_mask, mask)
            value_loss = 0.5 * rl.masked_mean((values - rollout.extra["returns"]) ** 2, mask)
            loss = policy_loss + args.vf_coef * value_loss + aux_loss + critic_aux
            return loss, {"policy_loss": float(policy_loss.detach()), "value_loss": float(value_loss.detach()),
                          "clip_frac": float(clip_frac)}

        rl.train_rl(trainer, make_rollout, ppo_loss, iterations=args.ppo_epochs, extra_ddp=(train_critic,))


if __name__ == "__main__":
    main()
