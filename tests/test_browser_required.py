"""CI cannot pass with the browser tests silently skipped: .ci/run stops when Chromium or Playwright is missing,
and with MM_REQUIRE_BROWSER=1 (which .ci/run exports) a browser that is missing or does not start fails the test."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import browser_util

ROOT = Path(__file__).resolve().parents[1]


def run_pytest_on(tmp_path, env_extra: dict, chromium: str) -> subprocess.CompletedProcess:
    """pytest on one browser test, in a fresh process whose browser_util sees `chromium` as the browser path."""
    (tmp_path / "conftest.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "import browser_util\n"
        f"browser_util.CHROMIUM = {chromium!r}\n"
        "import pytest\n\n"
        "@pytest.fixture\n"
        "def browser():  # what tests/conftest.py's fixture does\n"
        "    yield from browser_util.launch_chromium()\n", encoding="utf-8")
    (tmp_path / "test_one.py").write_text(
        "from browser_util import needs_browser\n\n"
        "@needs_browser\n"
        "def test_page(browser):\n"
        "    assert browser.new_page() is not None\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("MM_REQUIRE_BROWSER", "CI")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env={**env, **env_extra}, capture_output=True, text=True, timeout=120)


def test_a_browser_that_cannot_start_fails_the_test_when_required(tmp_path):
    r = run_pytest_on(tmp_path, {"MM_REQUIRE_BROWSER": "1"}, "/nonexistent/chromium")
    assert r.returncode != 0, r.stdout
    assert "did not start" in r.stdout and "skipped" not in r.stdout, r.stdout


def test_a_missing_browser_fails_instead_of_skipping_when_required(monkeypatch):
    monkeypatch.setattr(browser_util, "MISSING", "/usr/bin/chromium (apt-get install chromium)")
    with pytest.raises(pytest.fail.Exception, match="browser tests must run here"):
        next(browser_util.launch_chromium())


def test_ci_run_stops_without_chromium_or_playwright():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "export MM_REQUIRE_BROWSER=1" in script
    assert "WARNING: chromium" not in script
    # both checks exit non-zero before any test runs
    lines = script.splitlines()
    checks = [i for i, line in enumerate(lines) if ("command -v chromium" in line or "import playwright" in line)
              and "exit 1" in line]
    pytest_line = next(i for i, line in enumerate(lines) if line.startswith("python3 -m pytest"))
    assert len(checks) == 2 and max(checks) < pytest_line
    assert "npx eslint . --max-warnings 0" in script
