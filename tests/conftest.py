"""Shared test helpers. `slow` marks the end-to-end tests (several stages, extra processes); the README's
`python -m pytest -q` runs everything, `python -m pytest -q -m "not slow"` is the quick inner loop."""
import io
import subprocess
from contextlib import redirect_stderr, redirect_stdout

import pytest
import torch

from browser_util import launch_chromium
from model.runtime import ROOT


def run_main(main, argv) -> subprocess.CompletedProcess:
    """A script's main(argv) in this process, as a CompletedProcess (exit code, captured stdout/stderr).

    Starting a Python process costs ~4 s of torch + transformers imports on a 2-core machine; the stage scripts'
    `if __name__ == "__main__": main()` adds nothing that in-process runs would miss.
    """
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in argv]) or 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for all browser tests (tests/browser_util.py: they skip without it, except in CI where
    MM_REQUIRE_BROWSER=1 makes a missing or broken browser a failure)."""
    yield from launch_chromium()


@pytest.fixture(scope="session", autouse=True)
def token_cache_in_tmp(tmp_path_factory):
    """Stage runs write their token cache (dataset/token_cache.py) to a session folder, not into the checkout."""
    import os
    os.environ.setdefault("MINIMIND_TOKEN_CACHE", str(tmp_path_factory.mktemp("token_cache")))
    # and compiled decode steps (model/compile_cache.py) to a session folder too
    os.environ.setdefault("MINIMIND_COMPILE_CACHE", str(tmp_path_factory.mktemp("compile_cache")))
    yield


@pytest.fixture(scope="module")
def pretrain_data(tmp_path_factory):
    """The first 96 rows of the bundled pretrain file: a few optimizer steps for the multi-process tests."""
    path = tmp_path_factory.mktemp("data") / "pretrain.jsonl"
    with open(ROOT / "dataset/demo/pretrain_demo.jsonl", encoding="utf-8") as src:
        path.write_text("".join(line for _, line in zip(range(96), src)), encoding="utf-8")
    return path


@pytest.fixture
def one_thread():
    """In-process runs on one thread: on 2 shared cores, 2 OpenMP threads made a tiny SFT run 3x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
