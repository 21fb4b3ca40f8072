"""Shared pieces of the browser tests (the `browser` fixture itself is in conftest.py): Debian's Chromium driven
by Playwright (Playwright's own browser download does not work offline), a free port, polling a page, and the
built web app docs/tutorial/react-app/dist, rebuilt (npm ci if needed, then vite build, ~5 s) when it is missing
or older than a source file."""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "docs" / "tutorial" / "react-app"
DIST = APP / "dist"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None

# In CI (.ci/run exports MM_REQUIRE_BROWSER=1; GitHub Actions sets CI=true) a missing browser FAILS the browser
# tests instead of skipping them: a skipped browser test looks green while the pages were never opened.
REQUIRE_BROWSER = os.environ.get("MM_REQUIRE_BROWSER") == "1" or os.environ.get("CI", "").lower() == "true"
MISSING = ", ".join(what for what, ok in (("/usr/bin/chromium (apt-get install chromium)", CHROMIUM is not None),
                                          ("the playwright package (pip install -r requirements.txt)",
                                           sync_playwright is not None)) if not ok)

needs_browser = pytest.mark.skipif(bool(MISSING) and not REQUIRE_BROWSER,
                                   reason=f"needs {MISSING} (CI installs both and fails without them)")

# What vite build reads: a newer mtime on any of these makes dist/ stale.
APP_SOURCES = ["src", "index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(page, expression: str, timeout: float = 120):
    deadline = time.time() + timeout
    while not page.evaluate(expression):
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.2)


def stale_sources() -> list:
    """App sources newer than dist/index.html (all of them when there is no build)."""
    files = [p for name in APP_SOURCES for p in ([APP / name] if (APP / name).is_file() else (APP / name).rglob("*"))
             if p.is_file()]
    built = DIST / "index.html"
    if not built.exists():
        return files
    stamp = built.stat().st_mtime
    return [p for p in files if p.stat().st_mtime > stamp]


def ensure_built() -> Path:
    """dist/ as `npm run build` makes it; rebuilt here when stale, so the browser never tests an old bundle."""
    if not stale_sources():
        return DIST
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(f"{DIST} is missing or stale and npm is not installed: install Node 20, then "
                    "cd docs/tutorial/react-app && npm ci && npm run build")
    lock = APP / "node_modules" / ".package-lock.json"
    if not lock.exists() or lock.stat().st_mtime < (APP / "package-lock.json").stat().st_mtime:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=APP, check=True)
    subprocess.run([shutil.which("npx") or "npx", "vite", "build", "--logLevel", "warn"], cwd=APP, check=True)
    return DIST


def launch_chromium():
    """Playwright driving Debian's Chromium; yields one headless browser and closes it. A browser that is missing
    or does not start fails the test (never a skip: needs_browser already decided that the test must run)."""
    if MISSING:
        pytest.fail(f"browser tests must run here (MM_REQUIRE_BROWSER / CI) but {MISSING} is missing; install it "
                    "or unset MM_REQUIRE_BROWSER to skip them", pytrace=False)
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except Exception as e:  # noqa: BLE001 - playwright raises its own Error types for every start failure
            pytest.fail(f"Chromium at {CHROMIUM} did not start: {e}", pytrace=False)
        try:
            yield b
        finally:
            b.close()
