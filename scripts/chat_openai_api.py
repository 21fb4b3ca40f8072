"""Terminal chat with any OpenAI-compatible server (scripts/serve_openai_api.py, vLLM, ...) via the `openai` client.

    python scripts/serve_openai_api.py &                       # in another terminal
    python scripts/chat_openai_api.py                          # http://127.0.0.1:8998/v1, the server's model
    python scripts/chat_openai_api.py --base_url http://127.0.0.1:8000/v1 --model minimind   # vLLM
    python scripts/chat_openai_api.py --tools tools.json       # offer functions; calls are shown and answered

Reasoning is printed as [思考] before the answer; a tool call is printed and you type the tool's result (an empty
line skips it). /clear forgets the history, /exit quits. It needs only the `openai` package (no torch), so it also
runs on a machine that merely talks to a remote server. The client itself is scripts/client/chat.py.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import sys

from scripts.client.chat import build_parser, run


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # a console without UTF-8 shows '?' instead of crashing on emoji
        sys.stdout.reconfigure(errors="replace")
    return run(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C at the prompt or mid-answer: no traceback
        print(file=sys.stderr)
        sys.exit(130)
