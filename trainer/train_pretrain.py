"""Pretraining: next-token prediction on plain text, from random initialisation.

    python trainer/train_pretrain.py                       # bundled demo text, MiniMind2-Small size
    torchrun --nproc_per_node 8 trainer/train_pretrain.py --data_path dataset/pretrain_hq.jsonl
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
from dataset.lm_dataset import PretrainDataset
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
    # MiniMind's 32 x 8 rows per optimizer step; on CUDA the same 256 rows as 128 x 2 (4x fewer, larger launches),
    # compiled. Typing any of these flags gets exactly what you typed.
    parser = build_parser("MiniMind pretraining / 预训练", save_weight="pretrain", from_weight="none", epochs=1,
                          batch_size=DeviceDefault(32, linked=["accumulation_steps"], cuda=128), learning_rate=5e-4,
                          accumulation_steps=DeviceDefault(8, linked=["batch_size"], cuda=2), max_seq_len=340,
                          use_compile=DeviceDefault(0, cuda=1))
    parser.add_argument("--packing", type=int, default=0, choices=[0, 1],
                        help="1 = concatenate documents into full rows (no padding compute)")
    parser.add_argument("--cache_dir", default=None, help=CACHE_DIR_HELP)
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    with user_errors():
        ctx, log, model, tokenizer = start_stage(args)
        args.data_path = str(pick_data_path(args.data_path, "pretrain_hq.jsonl", "pretrain_demo.jsonl"))
        log(f"data: {args.data_path}")
        dataset = PretrainDataset(args.data_path, tokenizer, args.max_seq_len, packing=bool(args.packing),
                                  skip_bad_lines=bool(args.skip_bad_lines), cache_dir=resolve_cache_dir(args.cache_dir))
        train(args, ctx, model, dataset, causal_lm_loss, log=log)


if __name__ == "__main__":
    main()
