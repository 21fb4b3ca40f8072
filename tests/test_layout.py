"""The shape of the code: every module imports under one name, there is one UserError class, nothing outside the
entry-point bootstrap edits sys.path, weight/sidecar/resume files in the on-disk format load, and the application
floor keeps its layout (no module imports an entry point, project imports at module top, loose scripts stay thin)."""
import argparse
import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "dataset", "trainer", "scripts")


def source_files(pkg: str) -> list:
    """The package's .py files that are the project's (tracked, or new and not ignored): git-ignored folders such
    as dataset/cache/ (build_corpus.py unpacks PyPI packages there) hold other people's Python."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", f"{pkg}/*.py"],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked release): every file
        return sorted((ROOT / pkg).rglob("*.py"))
    return sorted(ROOT / f for f in listed if (ROOT / f).is_file())


def all_modules() -> list:
    names = ["eval_llm"]
    for pkg in PACKAGES:
        for f in source_files(pkg):
            names.append(".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"))
    return names


def test_every_module_imports_and_there_is_one_user_error():
    classes = set()
    for name in all_modules():
        if name == "scripts.web_demo":
            continue  # a Streamlit page: importing it runs the page (tests/test_serve.py drives it with AppTest)
        module = importlib.import_module(name)
        if hasattr(module, "UserError"):
            classes.add(module.UserError)
    from model.runtime import UserError
    assert classes == {UserError}
    # no module is loaded twice under another name (e.g. `trainer_utils` next to `trainer.trainer_utils`)
    stems = [m.split(".")[-1] for m in all_modules()]
    assert not {s for s in stems if s in sys.modules and f"trainer.{s}" in sys.modules}
    assert "trainer_utils" not in sys.modules and "chat_protocol" not in sys.modules


def test_only_entry_point_bootstraps_touch_sys_path():
    offenders = []
    for f in [ROOT / "eval_llm.py", *[p for pkg in PACKAGES for p in source_files(pkg)]]:
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                offenders.append((f.relative_to(ROOT), node.lineno))
    allowed = {(p, line) for p, line in offenders if "_here" in (ROOT / p).read_text().splitlines()[line - 1]}
    assert set(offenders) == allowed, set(offenders) - allowed


def test_files_in_the_on_disk_format_load(tmp_path):
    """A weight file, sidecar and resume state written field by field as the trainers write them (fp16 state dict;
    {"format", "model_config", "train_args"}; model/optimizer/scaler/rng/position) load through today's code."""
    from model import checkpoint
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
    from trainer import train_pretrain, trainer_utils
    torch.manual_seed(0)
    cfg = MiniMindConfig(hidden_size=64, num_hidden_layers=2)
    model = MiniMindForCausalLM(cfg)
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    out.mkdir()
    ckpt.mkdir()
    torch.save({k: v.half() for k, v in model.state_dict().items()}, out / "pretrain_64.pth")
    (out / "pretrain_64.json").write_text(json.dumps({
        "format": "minimind2-pth",
        "model_config": {k: getattr(cfg, k) for k in checkpoint.SIDECAR_CONFIG_KEYS},
        "train_args": {"save_weight": "pretrain", "hidden_size": 64, "num_hidden_layers": 2}}))
    path, sizes, source = checkpoint.resolve_weight(argparse.Namespace(
        save_dir=str(out), weight="pretrain", hidden_size=None, num_hidden_layers=None, use_moe=None))
    assert path == out / "pretrain_64.pth" and sizes["num_hidden_layers"] == 2 and "pretrain_64.json" in source
    loaded = MiniMindForCausalLM(MiniMindConfig(**sizes))
    checkpoint.load_weights(loaded, path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v.half().float())

    # a resume state at step 1 of a 2-step run continues to step 2
    args = train_pretrain.get_parser().parse_args(["--hidden_size", "64", "--num_hidden_layers", "2", "--device",
                                                   "cpu", "--save_dir", str(out), "--checkpoint_dir", str(ckpt)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": torch.amp.GradScaler(enabled=False).state_dict(), "extra": {},
                "rng": trainer_utils.rng_state(), "epoch": 0, "batches_done": 1, "step": 1, "world_size": 1,
                "run_id": None, "args": vars(args)}, ckpt / "pretrain_64_resume.pth")
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"text": "床前明月光，疑是地上霜。" * 3}, ensure_ascii=False) + "\n"
                            for _ in range(8)), encoding="utf-8")
    train_pretrain.main(["--hidden_size", "64", "--num_hidden_layers", "2", "--device", "cpu", "--save_dir",
                         str(out), "--checkpoint_dir", str(ckpt), "--data_path", str(data), "--batch_size", "4",
                         "--max_seq_len", "32", "--accumulation_steps", "1", "--from_resume", "1"])
    state = torch.load(ckpt / "pretrain_64_resume.pth", weights_only=True)
    assert state["step"] == 2 and state["batches_done"] == 2



# ------------------------------------------------------------------------------------------- the application floor
# Entry points are the files a user runs (eval_llm.py, trainer/train_*.py, scripts/*.py); everything they share lives
# in packages (model/, dataset/, trainer/*_utils, scripts/<package>/). Three rules keep it that way.

PROJECT_ROOTS = {"eval_llm", *PACKAGES}
MAX_LOOSE_SCRIPT_LINES = 200  # a .py file directly in scripts/: flags, a call into a package, help text

# Imports of an entry point that are the point of the importing module, with the reason.
ENTRY_POINT_IMPORTS = {
    ("scripts/bench/train.py", "trainer.train_pretrain"):
        "the benchmark times the pretrain stage script itself: its parser's defaults and its main()",
    ("scripts/bench/train.py", "trainer.train_full_sft"):
        "--e2e full_sft runs the SFT stage script's main() and reads its own log lines",
    ("scripts/bench/multi_gpu.py", "trainer.train_pretrain"):
        "the several-GPU benchmark measures pretraining at its own defaults, so it builds on the stage's parser",
    # each stage's flags, defaults and help live in its own script (the shared CLI plus what is the stage's own);
    # these two read every stage's get_parser() by name so the form and the tutorial show exactly those flags.
    # Importing a stage script runs no training: main() is guarded by __name__ == "__main__".
    ("scripts/serve/flags.py", "trainer.train_*"): "the training manager validates a run against the stage's parser",
    ("scripts/tutorial/stage_facts.py", "trainer.train_*"): "the tutorial export lists each stage's real flags",
}


def allowed_entry_import(rel: str, entry: str) -> bool:
    """(file, entry point) is in ENTRY_POINT_IMPORTS, directly or through a `trainer.train_*` pattern."""
    return (rel, entry) in ENTRY_POINT_IMPORTS or any(
        f == rel and pattern.endswith("*") and entry.startswith(pattern[:-1]) for f, pattern in ENTRY_POINT_IMPORTS)
# Project imports placed inside a function, with the reason (everything else is imported at module top).
DEFERRED_PROJECT_IMPORTS = {
    ("model/chat_protocol.py", "model.model_minimind"):
        "model_minimind imports torch + transformers (~3 s); the terminal client imports chat_protocol on machines "
        "with only `openai` installed, and only a config without YaRN needs YARN_DEFAULTS",
    ("model/checkpoint.py", "model.model_lora"):
        "model_lora imports peft (+0.55 s measured on the 2-core box) on every eval / server start; only "
        "--lora_weight needs it",
}


def project_files(root: Path = ROOT) -> list:
    return [root / "eval_llm.py", *[p for pkg in PACKAGES for p in source_files(pkg)]] if root == ROOT else \
        sorted(p for p in root.rglob("*.py"))


def module_name(root: Path, f: Path) -> str:
    return ".".join(f.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def entry_points(root: Path, files: list) -> set:
    """eval_llm, trainer.train_*, and every module directly in scripts/ (scripts/<package>/ holds the logic)."""
    names = {module_name(root, f) for f in files}
    return {n for n in names if n == "eval_llm" or n.startswith("trainer.train_")
            or (n.startswith("scripts.") and n.count(".") == 1 and not (root / "scripts" / n[8:]).is_dir())}


def imported_modules(node, module: str, is_package: bool) -> list:
    """Dotted names an import node may load: `from a import b` may be module a.b; relative names resolved."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join(parts + ([base] if base else []))
        return [base] + [f"{base}.{a.name}" for a in node.names]
    if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module" \
            and node.args:  # importlib.import_module("x.y") or f"trainer.train_{stage}": the constant prefix
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return [arg.value]
        if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
            return [arg.values[0].value + "*"]
    return []


def import_nodes(tree):
    """(node, inside a function) for every import statement and importlib.import_module call."""
    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom, ast.Call)):
                yield child, in_function
            yield from walk(child, inner)
    yield from walk(tree, False)


def layout_violations(root: Path = ROOT, files: list = None) -> dict:
    """{"entry_point_imports": [(file, module)], "deferred_project_imports": [(file, module)],
    "long_loose_scripts": [(file, lines)]}, allow-listed pairs left out."""
    files = files if files is not None else project_files(root)
    entries = entry_points(root, files)
    modules = {module_name(root, f) for f in files}
    found = {"entry_point_imports": set(), "deferred_project_imports": set(), "long_loose_scripts": set()}
    for f in files:
        rel, module = f.relative_to(root).as_posix(), module_name(root, f)
        text = f.read_text(encoding="utf-8")
        for node, in_function in import_nodes(ast.parse(text)):
            names = imported_modules(node, module, f.name == "__init__.py")
            for name in names:
                hit = [e for e in entries if (e.startswith(name[:-1]) if name.endswith("*") else e == name)]
                for e in hit:
                    if e != module and not allowed_entry_import(rel, e):
                        found["entry_point_imports"].add((rel, e))
            if in_function and names and not isinstance(node, ast.Call) and names[0].split(".")[0] in PROJECT_ROOTS:
                # `from scripts import tool_mocks` is reported as scripts.tool_mocks, `from model.x import f` as model.x
                name = next((n for n in names[1:] if n in modules),
                            names[1] if len(names) == 2 and (root / names[0].replace(".", "/")).is_dir() else names[0])
                if (rel, name) not in DEFERRED_PROJECT_IMPORTS:
                    found["deferred_project_imports"].add((rel, name))
        parent = f.relative_to(root).parent
        in_package = parent != Path("scripts") and (root / parent / "__init__.py").is_file()
        if rel.startswith("scripts/") and not in_package and f.name != "__init__.py":
            lines = len(text.splitlines())
            if lines > MAX_LOOSE_SCRIPT_LINES:
                found["long_loose_scripts"].add((rel, lines))
    return {k: sorted(v) for k, v in found.items()}


def test_no_module_imports_an_entry_point():
    """A module that needs an entry point's logic imports the package the logic lives in (issue 26: eval_bench.py
    imported eval_llm inside a function for its prompts)."""
    found = layout_violations()["entry_point_imports"]
    assert found == [], "\n".join(map(str, found))


def test_project_imports_are_at_module_top():
    """So a reader sees a module's place in the import graph in its first lines; exceptions carry their reason in
    DEFERRED_PROJECT_IMPORTS."""
    found = layout_violations()["deferred_project_imports"]
    assert found == [], "\n".join(map(str, found))


def test_loose_scripts_stay_thin():
    """A .py file directly in scripts/ parses flags and calls a package; logic that grows goes into a package."""
    found = layout_violations()["long_loose_scripts"]
    assert found == [], "\n".join(map(str, found))


def test_layout_rules_catch_planted_violations(tmp_path):
    """Each rule, on a small tree with one violation of each kind (and the same code placed legally)."""
    files = {
        "eval_llm.py": "X = 1\n",
        "model/__init__.py": "",
        "model/chat_protocol.py": "def f():\n    from model.model_minimind import Y\n",  # allow-listed
        "model/model_minimind.py": "Y = 2\n",
        "trainer/__init__.py": "",
        "trainer/train_pretrain.py": "import eval_llm\n",  # an entry importing an entry
        "scripts/__init__.py": "",
        "scripts/tool.py": "from scripts.kit import core\n" + "x = 1\n" * 150,  # thin: fine
        "scripts/fat.py": "x = 1\n" * (MAX_LOOSE_SCRIPT_LINES + 1),
        "scripts/kit/__init__.py": "",
        "scripts/kit/core.py": ("from scripts import tool\n"
                                "from . import helper\n"
                                "def g():\n    from model import model_minimind\n    import json\n"
                                "def h(stage):\n    import importlib\n"
                                "    return importlib.import_module(f'trainer.train_{stage}')\n"
                                + "y = 1\n" * 300),  # long, but inside a package: fine
        "scripts/kit/helper.py": "def k():\n    from .core import g\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    found = layout_violations(tmp_path)
    assert found["entry_point_imports"] == [("scripts/kit/core.py", "scripts.tool"),
                                            ("scripts/kit/core.py", "trainer.train_pretrain"),
                                            ("trainer/train_pretrain.py", "eval_llm")]
    assert found["deferred_project_imports"] == [("scripts/kit/core.py", "model.model_minimind"),
                                                 ("scripts/kit/helper.py", "scripts.kit.core")]
    assert found["long_loose_scripts"] == [("scripts/fat.py", MAX_LOOSE_SCRIPT_LINES + 1)]
