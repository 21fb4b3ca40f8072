"""Direct Preference Optimisation: push the policy towards `chosen` and away from `rejected`, relative to a
frozen reference (both start from full_sft).

    loss = -log sigmoid(beta * ((pi_c - pi_r) - (ref_c - ref_r)))

pi_* / ref_* are sequence log-probs of the assistant tokens under the policy / reference, averaged over those
tokens by default (MiniMind's choice; `--logp_reduce sum` for the paper's sum). `--precompute_ref 1` scores every
pair with the reference once before training and frees it, so each step runs one forward pass instead of two.

    python trainer/train_dpo.py                                   # bundled preference pairs, from out/full_sft_512.pth
    python trainer/train_dpo.py --data_path dataset/dpo.jsonl --precompute_ref 1
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from dataset.lm_dataset import DPODataset
from trainer.trainer_utils import (
    build_parser,
    label_logprobs,
    load_frozen_model,
    pick_data_path,
    reduce_logprobs,
    start_stage,
    train,
    unwrap,
    UserError,
    user_errors,
)


def get_parser():
    parser = build_parser("MiniMind DPO / 直接偏好优化", save_weight="dpo", from_weight="full_sft", epochs=1,
                          batch_size=4, learning_rate=4e-8, accumulation_steps=1, max_seq_len=1024)
    parser.add_argument("--beta", type=float, default=0.1, help="strength of the implicit KL to the reference")
    parser.add_argument("--logp_reduce", default="mean", choices=["mean", "sum"],
                        help="sequence log-prob = mean (MiniMind) or sum over assistant tokens")
    parser.add_argument("--max_pairs", type=int, default=0,
                        help="train on the first N pairs only (0 = all): a short run over a few pairs for several "
                             "epochs shows the margin grow on a small model in minutes (see trainer/recipes.py)")
    parser.add_argument("--precompute_ref", type=int, default=0, choices=[0, 1],
                        help="1 = score all pairs with the reference once up front (one forward per step, not two)")
    return parser


def dpo_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta: float):
    """DPO loss per pair, plus the implicit rewards beta * (pi - ref) of each side."""
    chosen_reward = beta * (pi_chosen - ref_chosen)
    rejected_reward = beta * (pi_rejected - ref_rejected)
    return -F.logsigmoid(chosen_reward - rejected_reward), chosen_reward, rejected_reward


def both_sides(batch: dict) -> tuple:
    """Chosen and rejected stacked into one batch of 2B rows: one forward pass for the pair."""
    return tuple(torch.cat([batch[f"chosen_{k}"], batch[f"rejected_{k}"]]) for k in
                 ("input_ids", "labels", "attention_mask"))


def sequence_logps(model, batch: dict, how: str):
    input_ids, labels, mask = both_sides(batch)
    logp, label_mask, aux = label_logprobs(model, input_ids, labels, mask)
    seq = reduce_logprobs(logp, label_mask, how)
    return seq.chunk(2), aux


class WithReferenceLogps(Dataset):
    """The preference pairs plus each pair's reference log-probs, computed once (sharded across ranks)."""

    def __init__(self, pairs: DPODataset, reference, ctx, how: str, batch_size: int, log):
        n = len(pairs)
        mine = list(range(ctx.rank, n, ctx.world_size))
        values = torch.zeros(n, 2)
        loader = DataLoader(torch.utils.data.Subset(pairs, mine), batch_size=batch_size)
        done = 0
        with torch.no_grad(), ctx.autocast():
            for batch in loader:
                batch = {k: v.to(ctx.device) for k, v in batch.items()}
                (chosen, rejected), _ = sequence_logps(reference, batch, how)
                rows = mine[done:done + len(chosen)]
                values[rows] = torch.stack([chosen, rejected], -1).float().cpu()
                done += len(chosen)
        if ctx.distributed:  # each rank scored every world_size-th pair; sum fills in the rest
            values = values.to(ctx.device)
            dist.all_reduce(values)
            values = values.cpu()
        self.pairs, self.values = pairs, values
        log(f"reference log-probs precomputed for {n} pairs")

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        return {**self.pairs[i], "ref_chosen": self.values[i, 0], "ref_rejected": self.values[i, 1]}


def main(argv=None):
    args = get_parser().parse_args(argv)
    with user_errors():
        if args.max_pairs < 0:
            raise UserError(f"--max_pairs {args.max_pairs}: give a number of pairs, or 0 for all")
        ctx, log, model, tokenizer = start_stage(args)
        reference = load_frozen_model(args, args.from_weight, ctx, log)
        args.data_path = str(pick_data_path(args.data_path, "dpo.jsonl", "dpo_demo.jsonl"))
        log(f"data: {args.data_path}")
        dataset = DPODataset(args.data_path, tokenizer, args.max_seq_len, skip_bad_lines=bool(args.skip_bad_lines))
        if 0 < args.max_pairs < len(dataset):
            dataset = Subset(dataset, range(args.max_pairs))
            log(f"--max_pairs {args.max_pairs}: the first {args.max_pairs} pairs")
        if args.precompute_ref:
            dataset = WithReferenceLogps(dataset, reference, ctx, args.logp_reduce, args.batch_size, log)
            reference = None  # frees its memory for the run

        def loss_fn(policy, batch):
            (pi_c, pi_r), aux = sequence_logps(policy, batch, args.logp_reduce)
            if "ref_chosen" in batch:
                ref_c, ref_r = batch["ref_chosen"], batch["ref_rejected"]
            else:
                with torch.no_grad():
                    (ref_c, ref_r), _ = sequence_logps(reference, batch, args.logp_reduce)
            losses, r_c, r_r = dpo_loss(pi_c.float(), pi_r.float(), ref_c.float(), ref_r.float(), args.beta)
            parts = {"chosen_reward": r_c.mean().detach(), "rejected_reward": r_r.mean().detach(),
                     "margin": (r_c - r_r).mean().detach(), "accuracy": (r_c > r_r).float().mean()}
            if unwrap(policy).config.use_moe:
                parts["aux_loss"] = aux.detach()
            return losses.mean() + aux, parts

        train(args, ctx, model, dataset, loss_fn, log=log, signal_keys=("margin", "accuracy"))


if __name__ == "__main__":
    main()
