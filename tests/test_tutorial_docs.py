"""The tutorial chapters (docs/tutorial/*.md) point at code that exists and quote commands that work.

- every `path::symbol` reference names an existing file and, for Python files, a function / class / method /
  module-level name defined there (symbols, never line numbers, so references cannot go stale silently);
- every `python <script> ...` line in a ```bash block is parsed by that script's own parser in this process
  (get_parser / build_parser / parse_args), so a renamed or removed flag fails here; scripts whose parser is
  built inside main() run as a subprocess with --help appended; run_all_npu.sh / run_train_npu.sh run with
  --dry-run.
"""
import ast
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "docs" / "tutorial").glob("*.md"))
REF = re.compile(r"`([\w./-]+\.(?:py|sh|json|md|txt|ascend))::([\w.]+)`")
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)


def test_there_are_eight_chapter_files():
    names = {p.name for p in CHAPTERS}
    assert {"README.md", "01-introduction.md", "07-advanced.md"} <= names and len(names) >= 8


def python_symbols(path: Path) -> set:
    """Top-level functions, classes, assigned names, and Class.method of a Python file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {f"{node.name}.{n.name}" for n in node.body
                          if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def references():
    for chapter in CHAPTERS:
        for path, symbol in REF.findall(chapter.read_text(encoding="utf-8")):
            yield pytest.param(chapter.name, path, symbol, id=f"{chapter.name}:{path}::{symbol}")


@pytest.mark.parametrize("chapter,path,symbol", list(references()))
def test_reference_exists(chapter, path, symbol):
    file = ROOT / path
    assert file.is_file(), f"{chapter}: `{path}::{symbol}` names a file that does not exist"
    if path.endswith(".py"):
        assert symbol in python_symbols(file), f"{chapter}: {path} defines no `{symbol}`"
    else:
        assert symbol in file.read_text(encoding="utf-8"), f"{chapter}: `{symbol}` does not occur in {path}"


SRC_TAG = re.compile(r'<Src path="([^"]+)"(?: symbol="([^"]+)")? />')
APP_TABS = ROOT / "docs" / "tutorial" / "react-app" / "src" / "tabs"


def app_references():
    """The app's <Src path="..." symbol="..." /> links (each becomes a link to the source on GitHub)."""
    for tab in sorted(APP_TABS.glob("*.tsx")):
        for path, symbol in SRC_TAG.findall(tab.read_text(encoding="utf-8")):
            yield pytest.param(tab.name, path, symbol, id=f"{tab.name}:{path}::{symbol}")


@pytest.mark.parametrize("tab,path,symbol", list(app_references()))
def test_app_source_link_exists(tab, path, symbol):
    file = ROOT / path
    assert file.is_file(), f"{tab}: <Src path={path!r}> names a file that does not exist"
    if symbol and path.endswith(".py"):
        assert symbol in python_symbols(file), f"{tab}: {path} defines no `{symbol}`"


def commands():
    for chapter in CHAPTERS:
        for block in BASH_BLOCK.findall(chapter.read_text(encoding="utf-8")):
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if line:
                    yield pytest.param(chapter.name, line, id=f"{chapter.name}:{line[:60]}")


def script_module(script: str) -> str:
    return script[:-3].replace("/", ".")


@pytest.mark.parametrize("chapter,line", list(commands()))
def test_command_is_accepted(chapter, line):
    for part in line.split("&&"):
        argv = shlex.split(part)
        if argv[0] in ("cd", "pip", "npm"):
            continue
        if argv[0] == "torchrun":
            argv = ["python", *[a for a in argv[1:] if not a.startswith("--nproc")][1:]]
        if argv[0] == "bash":
            script = ROOT / argv[1]
            assert script.is_file(), f"{chapter}: {argv[1]} does not exist"
            if script.name in ("run_all_npu.sh", "run_train_npu.sh"):
                rest = argv[2:] if "--dry-run" in argv else ["--dry-run", *argv[2:]]
                proc = subprocess.run(["bash", str(script), *rest], cwd=ROOT, capture_output=True, text=True,
                                      check=False)
                assert proc.returncode == 0, f"{chapter}: `{line}` --dry-run failed:\n{proc.stderr}"
            continue
        assert argv[0] == "python", f"{chapter}: unexpected command `{line}`"
        script, args = argv[1], argv[2:]
        assert (ROOT / script).is_file(), f"{chapter}: {script} does not exist"
        module = importlib.import_module(script_module(script))
        parser_fn = getattr(module, "get_parser", None) or getattr(module, "build_parser", None)
        if parser_fn is not None:
            try:
                parser_fn().parse_args(args)
            except SystemExit as e:
                pytest.fail(f"{chapter}: `{line}`: {script}'s parser rejects these flags (exit {e.code})")
        elif hasattr(module, "parse_args"):
            try:
                module.parse_args(args)
            except SystemExit as e:
                pytest.fail(f"{chapter}: `{line}`: {script} rejects these flags (exit {e.code})")
        else:
            proc = subprocess.run([sys.executable, script, *args, "--help"], cwd=ROOT, capture_output=True,
                                  text=True, check=False)
            assert proc.returncode == 0, f"{chapter}: `{line} --help` failed:\n{proc.stderr}"
