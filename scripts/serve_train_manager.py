"""Training manager: start, watch and stop one training run from a browser (or curl), safely.

    python scripts/serve_train_manager.py                      # 127.0.0.1:8999, prints a fresh token
    TRAIN_MANAGER_TOKEN=... python scripts/serve_train_manager.py --port 8999
    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8999/api/stages

It also serves the built web app (docs/tutorial/react-app/dist) at `/`, and an MCP server (streamable HTTP, the
official `mcp` SDK) at `/mcp` with the safe mock tools of scripts/tool_mocks.py (`GET /api/tools` lists them with
eval_tool_call's suite of cases, for the web app's auto-test).

The code lives in scripts/serve/: manager.py (routes, token/origin rules, log stream, MCP), flags.py (what a run may
ask for), runs.py (one run at a time, process trees, records), gate.py (timeouts, connection cap, body cap; shared
with the API server). Limits and defaults: docs/serving_en.md.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
from scripts.serve.manager import get_parser, serve


def main(argv=None):
    serve(get_parser().parse_args(argv))


if __name__ == "__main__":
    main()
