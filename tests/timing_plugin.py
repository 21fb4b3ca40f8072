"""A pytest plugin (not a test) that appends one JSON line per test phase to $TIMING_OUT as the phase ends: wall
seconds, CPU seconds of this process plus the subprocesses it waited for, and the load average. CPU seconds stay
comparable when the machine is shared, and the lines survive an interrupted run (docs/LOG.md, session 6):

    TIMING_OUT=/tmp/timing.jsonl PYTHONPATH=tests python3 -m pytest -q -m "not slow" -p timing_plugin
"""
import json
import os
import resource
import time

import pytest


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(phase: str):
    @pytest.hookimpl(hookwrapper=True)
    def hook(item, *args):
        wall, cpu = time.perf_counter(), _cpu_seconds()
        yield
        row = {"test": item.nodeid, "phase": phase, "wall": round(time.perf_counter() - wall, 2),
               "cpu": round(_cpu_seconds() - cpu, 2), "load1": os.getloadavg()[0]}
        with open(os.environ["TIMING_OUT"], "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    return hook


pytest_runtest_setup = _timed("setup")
pytest_runtest_call = _timed("call")
pytest_runtest_teardown = _timed("teardown")
