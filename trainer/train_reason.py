"""Reasoning SFT: teach the `<think>...</think><answer>...</answer>` format, starting from the DPO model.

The loss is SFT's (assistant tokens only) with the four reasoning tags weighted `--tag_weight` times (MiniMind
uses 10): getting the format right is what makes the answer parseable. The tags are single tokens in our
tokenizer (ids 3-10 hold the eight tags), so the weight lands on exactly those tokens, not on every `<`, `th`
or `ink` piece that happens to appear in the text as MiniMind's multi-token tags do.

    python trainer/train_reason.py                                # bundled reasoning demo, from out/dpo_512.pth
    python trainer/train_reason.py --data_path dataset/r1_mix_1024.jsonl --max_seq_len 720
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import torch

from dataset.lm_dataset import SFTDataset
from trainer.trainer_utils import build_parser, label_logprobs, pick_data_path, start_stage, train, unwrap, user_errors

REASONING_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def get_parser():
    parser = build_parser("MiniMind reasoning SFT / 推理模型蒸馏微调", save_weight="reason", from_weight="dpo",
                          epochs=1, batch_size=8, learning_rate=1e-6, accumulation_steps=1, max_seq_len=720)
    parser.add_argument("--tag_weight", type=float, default=10.0,
                        help="loss weight of the <think>/</think>/<answer>/</answer> tokens (others weigh 1)")
    return parser


def tag_weighted_nll(logp: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor, tag_ids: torch.Tensor,
                     tag_weight: float) -> torch.Tensor:
    """sum(w * -logp) / sum(w) over labelled tokens, w = tag_weight on reasoning-tag targets, 1 elsewhere."""
    weights = mask * torch.where(torch.isin(targets, tag_ids), tag_weight, 1.0)
    return -(weights * logp).sum() / weights.sum().clamp(min=1)


def main(argv=None):
    args = get_parser().parse_args(argv)
    with user_errors():
        ctx, log, model, tokenizer = start_stage(args)
        tag_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(REASONING_TAGS)), device=ctx.device)
        args.data_path = str(pick_data_path(args.data_path, "r1_mix_1024.jsonl", "r1_demo.jsonl"))
        log(f"data: {args.data_path}")
        dataset = SFTDataset(args.data_path, tokenizer, args.max_seq_len, skip_bad_lines=bool(args.skip_bad_lines))

        def loss_fn(model, batch):
            input_ids, labels = batch
            logp, mask, aux = label_logprobs(model, input_ids, labels)
            loss = tag_weighted_nll(logp, mask, input_ids[:, 1:], tag_ids, args.tag_weight)
            return loss + aux, ({"aux_loss": aux} if unwrap(model).config.use_moe else {})

        train(args, ctx, model, dataset, loss_fn, log=log)


if __name__ == "__main__":
    main()
