"""The READMEs stay short and in step: each under 250 lines, the zh and en pages of every pair carry the same
commands in the same order, every local link resolves (the four pages other branches write are named below), and
every script a README command runs exists."""
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_README_LINES = 250
# zh page -> en page; the deep sections live in docs/ (issue 32)
PAIRS = [("README.md", "README_en.md")] + [(f"docs/{n}.md", f"docs/{n}_en.md")
                                           for n in ("model", "training", "deploy", "gpu", "benchmarks")]
# pages written on other branches at the same time (data cache, server limits, bind addresses, FSDP2)
PAGES_FROM_OTHER_BRANCHES = {f"docs/{n}{s}.md" for n in ("data", "serving", "security", "multi_gpu")
                             for s in ("", "_en")}


def fenced_commands(text: str) -> list:
    """The lines inside ``` blocks, comments and trailing comments removed: what a reader types."""
    out, inside = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        code = re.split(r"\s#\s|\s#$|^\s*#", line)[0].rstrip()  # '# 注释' / '  # comment'; keeps URLs and '#fff'
        if code.strip():
            out.append(code.strip())
    return out


@pytest.mark.parametrize("name", ["README.md", "README_en.md"])
def test_readme_is_short(name):
    lines = (ROOT / name).read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"{name}: {lines} lines; move deep sections into docs/"


@pytest.mark.parametrize("zh,en", PAIRS)
def test_zh_and_en_pages_have_the_same_commands_in_the_same_order(zh, en):
    a = fenced_commands((ROOT / zh).read_text(encoding="utf-8"))
    b = fenced_commands((ROOT / en).read_text(encoding="utf-8"))
    assert a, zh
    assert a == b, f"{zh} and {en} differ; first difference: " + next(
        (f"{x!r} vs {y!r}" for x, y in zip(a, b) if x != y), f"{len(a)} vs {len(b)} commands")


@pytest.mark.parametrize("page", [p for pair in PAIRS for p in pair])
def test_local_links_resolve(page):
    path = ROOT / page
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
        target = target.split("#")[0]
        if not target or re.match(r"[a-z]+://", target):
            continue
        resolved = (path.parent / target).resolve()
        rel = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else str(resolved)
        assert resolved.exists() or rel in PAGES_FROM_OTHER_BRANCHES, f"{page}: link to {target} does not resolve"


@pytest.mark.parametrize("name", ["README.md", "README_en.md"])
def test_every_script_a_readme_command_runs_exists(name):
    for cmd in fenced_commands((ROOT / name).read_text(encoding="utf-8")):
        for i, word in enumerate(shlex.split(cmd)):
            if word.endswith((".py", ".sh")) and "/" in word and not word.startswith(("-", "http")):
                assert (ROOT / word).is_file(), f"{name}: {cmd} runs {word}, which does not exist"
