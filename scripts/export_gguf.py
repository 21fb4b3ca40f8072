"""Export a dense MiniMind .pth as a GGUF file for llama.cpp / Ollama, with an Ollama Modelfile.

    python scripts/export_gguf.py --weight full_sft                    # -> out/minimind-hf/minimind-f16.gguf
    python scripts/export_gguf.py --weight full_sft --dtype bfloat16   # -> .../minimind-bf16.gguf
    cd out/minimind-hf && ollama create minimind -f Modelfile && ollama run minimind

The same command as `convert_to_hf.py --gguf`: the GGUF file is written next to the verified transformers folder
it is made from (the folder's logits are checked against the native model first). MoE weights are refused:
llama.cpp has no MiniMind-MoE architecture; serve those with vLLM (convert_to_hf.py). The writer is
scripts/convert/gguf.py.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import sys

from model.runtime import user_errors
from scripts.convert.hf import build_parser, convert


def main(argv=None) -> int:
    parser = build_parser()
    parser.description = "MiniMind .pth -> GGUF (llama.cpp / Ollama), via the verified transformers folder"
    parser.set_defaults(gguf=True)
    args = parser.parse_args(argv)
    with user_errors():
        convert(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
