"""How long `bash scripts/demo.sh` takes, as a newcomer runs it: one JSON line per run with the whole wall time, the
demo's own stage times (from its summary), and the machine's load before and after (a shared machine is slower).

    python scripts/bench_demo.py                       # install cached (the environment exists), then the demo
    python scripts/bench_demo.py --fresh_install       # also a run that installs into a new, empty environment
    python scripts/bench_demo.py --pretrain_steps 2 --sft_steps 2   # a quick check of this script itself

Outputs go to a temporary folder (never out/demo). A fresh install creates its environment there too and needs the
package index (or the local wheel mirror) to be reachable.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = re.compile(r"took ([\d.]+) min(?: \(([^)]*)\))?")


def load_average() -> list:
    return [round(x, 2) for x in os.getloadavg()]


def run_demo(env: dict, label: str, args) -> dict:
    """One demo run; its wall time measured here and the stage times the demo itself reports."""
    before = load_average()
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"error: the demo failed ({label}, exit code {proc.returncode}); its output is above")
    summary = (Path(env["DEMO_DIR"]) / "demo_summary.md").read_text(encoding="utf-8")
    m = STAGES.search(summary)
    stages = {}
    for part in (m.group(2) or "").split(", ") if m else []:
        name, _, value = part.rpartition(" ")[0].partition(" ")
        stages[name] = round(float(value) * 60, 1)
    return {"run": label, "wall_s": round(wall, 1), "demo_reported_s": round(float(m.group(1)) * 60, 1) if m else None,
            "stages_s": stages, "pretrain_steps": args.pretrain_steps, "sft_steps": args.sft_steps,
            "cpus": os.cpu_count(), "load_before": before, "load_after": load_average()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="演示用时（整个墙钟时间，含安装与报告）/ the demo's wall time, one JSON "
                                            "line per run", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--fresh_install", action="store_true", help="also time a run that installs into a new venv")
    p.add_argument("--python", default=None, help="the Python the demo starts from (default: the demo's own choice)")
    p.add_argument("--pretrain_steps", type=int, default=200, help="the demo's default is 200")
    p.add_argument("--sft_steps", type=int, default=120, help="the demo's default is 120")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        base = {k: v for k, v in os.environ.items() if k not in ("SKIP_INSTALL", "DEMO_VENV", "DEMO_INSTALL_ONLY")}
        base.update(PRETRAIN_STEPS=str(args.pretrain_steps), SFT_STEPS=str(args.sft_steps),
                    DEMO_CHECKPOINT_DIR=f"{tmp}/ckpt", PYTHONUNBUFFERED="1")
        if args.python:
            base["PYTHON"] = args.python
        runs = [("install_cached", {})]
        if args.fresh_install:
            runs.append(("fresh_install", {"DEMO_VENV": f"{tmp}/venv"}))
        for label, extra in runs:
            env = dict(base, DEMO_DIR=f"{tmp}/{label}", **extra)
            print(json.dumps(run_demo(env, label, args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
