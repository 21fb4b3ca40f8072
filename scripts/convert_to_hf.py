"""Export a MiniMind .pth to a standard transformers folder that vLLM, SGLang, llama.cpp's converter and plain
`AutoModelForCausalLM.from_pretrained` load without remote code; optionally a GGUF file for llama.cpp / Ollama.

    python scripts/convert_to_hf.py --weight full_sft                  # -> out/minimind-hf (LlamaForCausalLM)
    python scripts/convert_to_hf.py --weight full_sft --use_moe 1      # -> out/minimind-moe-hf (Qwen2MoeForCausalLM)
    python scripts/convert_to_hf.py --weight full_sft --gguf           # + out/minimind-hf/minimind-f16.gguf

Dense MiniMind is exactly Llama; MoE MiniMind maps onto Qwen2-MoE. Every export is loaded with plain transformers
and its fp32 logits are compared with the native model's before the folder is put in place (scripts/convert/hf.py
has the mapping and the check).
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
    args = build_parser().parse_args(argv)
    with user_errors():
        convert(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
