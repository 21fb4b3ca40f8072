"""OpenAI-compatible HTTP API for a MiniMind model: /v1/chat/completions (streaming or not), /v1/models, /health.

    python scripts/serve_openai_api.py                                  # out/full_sft_*.pth on 127.0.0.1:8998
    python scripts/serve_openai_api.py --weight reason                  # <think> -> reasoning_content
    python scripts/serve_openai_api.py --weight tool_sft                # <tool_call> -> tool_calls
    python scripts/serve_openai_api.py --load_from ./MiniMind2 --host 0.0.0.0 --api_key sk-...

Any OpenAI client talks to it (`OpenAI(base_url="http://127.0.0.1:8998/v1", api_key=...)`), as to vLLM.
One worker thread owns the model and decodes every request in one continuous batch; rows are shared fairly, so a
short request starts within a step or two even while another request fills the batch. Limits and defaults
(timeouts, caps, connection cap, bind address): docs/serving_en.md. The code: scripts/serve/ (api.py first).
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import logging
import sys

from scripts.serve.api import Settings, build_parser, create_app, serve

__all__ = ["Settings", "build_parser", "create_app", "main"]  # the old import path keeps working


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    serve(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
