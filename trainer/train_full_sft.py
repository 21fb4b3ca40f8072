"""Full-parameter supervised fine-tuning on chat data; loss only on the assistant's tokens.

    python trainer/train_full_sft.py                       # bundled demo conversations, from out/pretrain_512.pth
    python trainer/train_full_sft.py --data_path dataset/sft_mini_512.jsonl --max_seq_len 340
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
from dataset.lm_dataset import SFTDataset
from dataset.token_cache import CACHE_DIR_HELP, resolve_cache_dir
from trainer.trainer_utils import (
    DeviceDefault,
    build_parser,
    causal_lm_loss,
    pick_data_path,
    start_stage,
    train,
    user_errors,
)


def get_parser():
    # MiniMind's 16 rows per step stay (a larger batch would change what lr 1e-6 means); on CUDA compiled, and the
    # rows are always max_seq_len long, so one compile serves the whole run.
    parser = build_parser("MiniMind full SFT / 全参数监督微调", save_weight="full_sft", from_weight="pretrain",
                          epochs=2, batch_size=16, learning_rate=1e-6, accumulation_steps=1, max_seq_len=340,
                          use_compile=DeviceDefault(0, cuda=1))
    parser.add_argument("--cache_dir", default=None, help=CACHE_DIR_HELP)
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    with user_errors():
        ctx, log, model, tokenizer = start_stage(args)
        args.data_path = str(pick_data_path(args.data_path, "sft_mini_512.jsonl", "sft_demo.jsonl"))
        log(f"data: {args.data_path}")
        dataset = SFTDataset(args.data_path, tokenizer, args.max_seq_len,
                             skip_bad_lines=bool(args.skip_bad_lines), cache_dir=resolve_cache_dir(args.cache_dir))
        train(args, ctx, model, dataset, causal_lm_loss, log=log)


if __name__ == "__main__":
    main()
