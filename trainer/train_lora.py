"""LoRA fine-tuning: the full_sft weights stay frozen; small low-rank adapters on every projection learn the task.

Only the adapter parameters get gradients and go to the optimizer (about 1% of the model at rank 8). The adapter
is saved in PEFT format under out/lora/{lora_name}_{hidden}[_moe]/, so `eval_llm.py --lora_weight lora_identity`,
the API server and `peft.PeftModel.from_pretrained` all load it; `--merge 1` also writes the merged model as
out/{lora_name}_{hidden}[_moe].pth (+ sidecar) for tools that only take a plain weight file.

    python trainer/train_lora.py                                  # bundled identity set, from out/full_sft_512.pth
    python trainer/train_lora.py --data_path dataset/lora_medical.jsonl --lora_name lora_medical --merge 1
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
from dataset.lm_dataset import SFTDataset
from model.model_lora import apply_lora, lora_parameters, merge_lora, save_lora
from trainer.trainer_utils import (
    build_parser,
    causal_lm_loss,
    pick_data_path,
    repo_path,
    save_weights,
    start_stage,
    train,
    unwrap,
    user_errors,
    weight_path,
    weight_stem,
)


def get_parser():
    parser = build_parser("MiniMind LoRA fine-tuning / LoRA 微调", from_weight="full_sft", epochs=50,
                          batch_size=32, learning_rate=1e-4, accumulation_steps=1, max_seq_len=340)
    parser.add_argument("--lora_name", default="lora_identity",
                        help="adapter name: out/lora/{lora_name}_{hidden}[_moe]/ (also the resume-state name)")
    parser.add_argument("--lora_rank", type=int, default=8, help="rank r of the A (r x in) / B (out x r) matrices")
    parser.add_argument("--lora_alpha", type=float, default=None, help="update scale numerator; default 2 x rank")
    parser.add_argument("--merge", type=int, default=0, choices=[0, 1],
                        help="1 = also write the merged model to out/{lora_name}_{hidden}[_moe].pth")
    return parser


def adapter_dir(args):
    return repo_path(args.save_dir) / "lora" / weight_stem(args.lora_name, args.hidden_size, args.use_moe)


def main(argv=None):
    args = get_parser().parse_args(argv)
    args.save_weight = args.lora_name  # names the resume state and the merged .pth
    with user_errors():
        ctx, log, model, tokenizer = start_stage(args)
        model = apply_lora(model, rank=args.lora_rank, alpha=args.lora_alpha)
        trainable = sum(p.numel() for p in lora_parameters(model))
        total = sum(p.numel() for p in model.parameters())
        log(f"lora: rank {args.lora_rank}, {trainable / 1e6:.3f}M trainable of {total / 1e6:.2f}M "
            f"({100 * trainable / total:.2f}%)")
        args.data_path = str(pick_data_path(args.data_path, "lora_identity.jsonl", "lora_identity_demo.jsonl"))
        log(f"data: {args.data_path}")
        dataset = SFTDataset(args.data_path, tokenizer, args.max_seq_len, skip_bad_lines=bool(args.skip_bad_lines))
        trainer = train(args, ctx, model, dataset, causal_lm_loss, log=log,
                        save_fn=lambda m: save_lora(unwrap(m), adapter_dir(args)))
        if args.merge and ctx.is_main:
            merged = merge_lora(unwrap(trainer.model))
            path = weight_path(args.save_dir, args.lora_name, args.hidden_size, args.use_moe)
            save_weights(merged, path, args)
            log(f"merged model written to {path}")


if __name__ == "__main__":
    main()
