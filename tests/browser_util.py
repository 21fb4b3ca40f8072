"""Shared pieces of the browser tests (the `browser` fixture itself is in conftest.py): Debian's Chromium driven
by Playwright (Playwright's own browser download does not work offline), a free port, polling a page, and the
built web app docs/tutorial/react-app/dist, rebuilt (npm ci if needed, then vite build, ~5 s) when it is missing
or older than a source file."""
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

needs_browser = pytest.mark.skipif(CHROMIUM is None or sync_playwright is None,
                                   reason="needs /usr/bin/chromium (apt-get install chromium) and the playwright "
                                          "package (CI installs both)")

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
    """Playwright driving Debian's Chromium; yields one headless browser and closes it."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
