"""The whole export: build it, write it (temp file + rename), and compare a fresh one with the committed files."""
import json
import tempfile
from pathlib import Path

import torch

from decimal import Decimal
from math import isclose

from model.checkpoint import atomic_write_text, load_tokenizer
from model.runtime import ROOT, UserError, display_path
from scripts.tutorial import hands_on
from scripts.tutorial.model_facts import preset_facts, rope_facts, tiny_facts
from scripts.tutorial.stage_facts import ascend_facts, deployment_facts, lr_facts, stage_facts
from scripts.tutorial.text_facts import sft_example_facts, tokenizer_facts

DEFAULT_OUT = ROOT / "docs" / "tutorial" / "react-app" / "src" / "data"
DATA_FILE = "tutorial-data.json"
COPIED = {"tokenizer.json": ROOT / "model" / "tokenizer.json",
          "tokenizer_config.json": ROOT / "model" / "tokenizer_config.json"}
SCHEMA = 1
BOUNDS_FILE = "flag-bounds.json"  # imported by the training form
PARITY_FILE = "tool-parity.json"  # read by src/hands_on/tools.test.ts only


def build_export() -> dict:
    torch.manual_seed(0)
    tokenizer = load_tokenizer(ROOT / "model")
    return {"schema": SCHEMA,
            "generated_by": "scripts/export_tutorial_data.py",
            "presets": preset_facts(),
            "stages": stage_facts(),
            "lr": lr_facts(),
            "rope": rope_facts(),
            "tiny": tiny_facts(tokenizer),
            "tokenizer": tokenizer_facts(tokenizer),
            "sft_examples": sft_example_facts(tokenizer),
            "deployment": deployment_facts(),
            "ascend": ascend_facts()}


def export_texts() -> dict:
    """{file name: exact text} of every exported file."""
    torch.set_num_threads(1)  # one thread: the same summation order on every machine
    texts = {DATA_FILE: json.dumps(build_export(), ensure_ascii=False, indent=1) + "\n"}
    for name, src in COPIED.items():
        texts[name] = src.read_text(encoding="utf-8")
    texts[BOUNDS_FILE] = json.dumps(hands_on.flag_bounds(), indent=1) + "\n"
    texts[PARITY_FILE] = json.dumps(hands_on.tool_parity(), ensure_ascii=False, indent=1) + "\n"
    return texts


def write_export(out_dir: Path) -> list:
    texts = export_texts()
    for name, text in texts.items():
        atomic_write_text(text, Path(out_dir) / name)
    return sorted(texts)


def stale_files(committed_dir: Path, fresh_dir: Path) -> list:
    """Names of exported files in `committed_dir` that differ from `fresh_dir`.

    Floats count as equal within 1e-4 relative, or within one unit of the last decimal they were rounded to: CPUs
    with other SIMD kernels change a forward's sums in the 7th digit, which can flip a value rounded to 4 decimals
    (0.2210 on one machine, 0.2209 on another) while nothing in the export changed."""
    def last_unit(x) -> float:
        return 10.0 ** Decimal(repr(float(x))).as_tuple().exponent

    def same(a, b) -> bool:
        if isinstance(a, float) or isinstance(b, float):
            if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
                return False
            return isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) or abs(a - b) <= 1.5 * min(last_unit(a), last_unit(b))
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    stale = []
    for name in EXPORTED:
        old, new = Path(committed_dir) / name, Path(fresh_dir) / name
        if not old.is_file():
            stale.append(name)
        elif name.endswith(".json") and name == DATA_FILE:
            if not same(json.loads(old.read_text(encoding="utf-8")), json.loads(new.read_text(encoding="utf-8"))):
                stale.append(name)
        elif old.read_bytes() != new.read_bytes():
            stale.append(name)
    return stale


EXPORTED = [DATA_FILE, *COPIED, BOUNDS_FILE, PARITY_FILE]



def check_export(out_dir: Path) -> None:
    """Raise a UserError naming the stale files and the command that refreshes them; write nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        write_export(Path(tmp))
        stale = stale_files(out_dir, Path(tmp))
    if stale:
        raise UserError(f"the tutorial export in {out_dir} is stale: {', '.join(stale)} differ from what the code "
                        "gives now; run: python scripts/export_tutorial_data.py, then commit "
                        f"{display_path(out_dir)}/")
