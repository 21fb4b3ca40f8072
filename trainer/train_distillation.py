"""Knowledge distillation: a small student learns from a larger frozen teacher's token distributions.

    loss = alpha * CE(student, data) + (1 - alpha) * T^2 * KL(teacher_T || student_T)

on assistant tokens, where _T is the softmax at temperature T (soft targets carry the teacher's ranking of the
wrong answers; T^2 keeps the KL gradient's scale independent of T, as in Hinton et al.). The teacher runs without
gradients under the same autocast as the student. Both share the tokenizer, so any two MiniMind sizes work.

    python trainer/train_distillation.py          # student 512/8 from full_sft, teacher 768/16 from full_sft
    python trainer/train_distillation.py --student_hidden_size 512 --teacher_hidden_size 640 --teacher_use_moe 1
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse

import torch
import torch.nn.functional as F

from dataset.lm_dataset import SFTDataset
from trainer.trainer_utils import (
    UserError,
    build_parser,
    load_frozen_model,
    pick_data_path,
    start_stage,
    train,
    unwrap,
    user_errors,
)


def get_parser():
    parser = build_parser("MiniMind knowledge distillation / 知识蒸馏", save_weight="full_dist",
                          from_weight="full_sft", epochs=6, batch_size=32, learning_rate=5e-6, accumulation_steps=1,
                          max_seq_len=340)
    add = parser.add_argument
    # MiniMind's student flags, same destinations as the common --hidden_size / --num_hidden_layers / --from_weight
    add("--student_hidden_size", dest="hidden_size", type=int, default=argparse.SUPPRESS, help="= --hidden_size")
    add("--student_num_layers", dest="num_hidden_layers", type=int, default=argparse.SUPPRESS,
        help="= --num_hidden_layers")
    add("--from_student_weight", dest="from_weight", default=argparse.SUPPRESS, help="= --from_weight")
    add("--teacher_hidden_size", type=int, default=768, help="teacher width (768 = MiniMind2)")
    add("--teacher_num_layers", type=int, default=16, help="teacher blocks")
    add("--teacher_use_moe", type=int, default=0, choices=[0, 1], help="1 = the teacher is a MoE model")
    add("--from_teacher_weight", default="full_sft", help="teacher stage: out/{stage}_{teacher_hidden}[_moe].pth")
    add("--alpha", type=float, default=0.5, help="weight of the hard-label CE (1 - alpha goes to the KL)")
    add("--temperature", type=float, default=1.5, help="softmax temperature of both distributions in the KL")
    return parser


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """T^2 * mean over masked positions of KL(softmax(teacher/T) || softmax(student/T))."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)
    return temperature ** 2 * (kl * mask).sum() / mask.sum().clamp(min=1)


def main(argv=None):
    args = get_parser().parse_args(argv)
    with user_errors():
        ctx, log, student, tokenizer = start_stage(args)
        try:
            teacher = load_frozen_model(args, args.from_teacher_weight, ctx, log,
                                        hidden_size=args.teacher_hidden_size,
                                        num_hidden_layers=args.teacher_num_layers, use_moe=args.teacher_use_moe)
        except UserError as e:
            raise UserError(f"teacher: {e}\n  (teacher sizes come from --teacher_hidden_size / --teacher_num_layers "
                            f"/ --teacher_use_moe)") from None
        args.data_path = str(pick_data_path(args.data_path, "sft_mini_512.jsonl", "sft_demo.jsonl"))
        log(f"data: {args.data_path}")
        dataset = SFTDataset(args.data_path, tokenizer, args.max_seq_len, skip_bad_lines=bool(args.skip_bad_lines))

        def loss_fn(model, batch):
            input_ids, labels = batch
            out = model(input_ids, labels=labels)
            with torch.no_grad():
                teacher_logits = teacher(input_ids).logits
            mask = (labels[:, 1:] != -100).float()
            kl = distillation_kl(out.logits[:, :-1], teacher_logits[:, :-1], mask, args.temperature)
            loss = args.alpha * out.loss + (1 - args.alpha) * kl + out.aux_loss
            parts = {"ce": out.loss.detach(), "kl": kl.detach()}
            if unwrap(model).config.use_moe:
                parts["aux_loss"] = out.aux_loss.detach()
            return loss, parts

        train(args, ctx, student, dataset, loss_fn, log=log)


if __name__ == "__main__":
    main()
