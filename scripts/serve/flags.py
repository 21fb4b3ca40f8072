"""The training manager's validation: what a caller may ask a trainer to do.

A run is a stage from the allow-list plus a JSON object of flags; every flag is checked against that trainer's own
`get_parser()` (known flag, JSON type, choices, the trainer's minimum values via check_common_args), path flags
must resolve (symlinks followed) inside dataset/, out/, checkpoints/ (logs/ for --log_dir, model/ too for
--tokenizer_path), weight names are plain names, and flags that load or run foreign code are refused. Everything a
request can set ends up as an argv list (no shell), so a value can never become a second command.
"""
import argparse
import importlib
import json
import math
import re
from functools import lru_cache
from pathlib import Path

from model.checkpoint import weight_stem
from model.runtime import ROOT, UserError, display_path
from trainer.trainer_utils import MAXIMUM_FLAG_VALUES, MINIMUM_FLAG_VALUES, check_common_args

STAGES = ("pretrain", "full_sft", "lora", "dpo", "reason", "distillation", "ppo", "grpo", "spo")
# flags that make a trainer load a model folder with its Python code, or import a user's function
REFUSED_FLAGS = {
    "reward_model_path": "loads a reward model (optionally with its own Python code); run it from a shell",
    "reward_fn": "imports and runs a Python function; run it from a shell",
    "trust_remote_code": "runs Python code shipped with a model folder; run it from a shell",
}
# where each path flag may point (after resolving symlinks); any other path-like value is refused
PATH_FLAGS = {
    "save_dir": ("out",),
    "checkpoint_dir": ("checkpoints",),
    "data_path": ("dataset",),
    "tokenizer_path": ("model", "out", "dataset"),
    "log_dir": ("logs",),
}
DEFAULT_PATH_ROOTS = ("dataset", "out", "checkpoints")
NAME_FLAGS = {"save_weight", "from_weight", "from_teacher_weight", "lora_name"}  # become parts of file names
# 64 characters: a weight name becomes `{name}_{hidden}[_moe].pth` and `..._resume.pth`, well under the 255-byte
# file-name limit of ext4; no "/" or leading "." so a name can never climb out of out/ or hide a file
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PLAIN_STRING_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}$")  # device names, tracker project, ...


class RequestError(Exception):
    """A refused request: HTTP status + a message that says what was wrong and how to fix it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# ------------------------------------------------------------------------------------------------- stages and flags

@lru_cache(maxsize=None)
def stage_parser(stage: str) -> argparse.ArgumentParser:
    """The trainer's own parser (imported, so the manager can never disagree with the trainer about a flag).

    Imported by name on first use: the nine trainer modules are the stage list, and importing a stage nobody
    asks about would only slow the manager's start."""
    return importlib.import_module(f"trainer.train_{stage}").get_parser()


def _flag_actions(stage: str) -> dict:
    """`--name` -> argparse action, for every option of the stage except --help."""
    out = {}
    for action in stage_parser(stage)._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        for opt in action.option_strings:
            if opt.startswith("--"):
                out[opt[2:]] = action
    return out


def _type_name(action) -> str:
    t = action.type
    return "int" if t is int else "float" if t is float else "str"


def flag_kind(name: str, action) -> str:
    if name in REFUSED_FLAGS or action.dest in REFUSED_FLAGS:
        return "refused"
    if action.dest in PATH_FLAGS:
        return "path"
    if action.dest in NAME_FLAGS or name in NAME_FLAGS:
        return "name"
    return "value"


def _plain_default(value):
    """A trainer default as JSON: DeviceDefault (a default that depends on the device) -> its plain value."""
    return value.default if hasattr(value, "per_device") else value


def stage_info(stage: str) -> dict:
    """The stage's flags with type, default, choices, help and group, straight from its parser."""
    parser = stage_parser(stage)
    groups = {id(a): g.title for g in parser._action_groups for a in g._group_actions}
    flags = []
    for name, action in _flag_actions(stage).items():
        default = None if action.default is argparse.SUPPRESS else _plain_default(action.default)
        per_device = getattr(action.default, "per_device", None)
        kind = flag_kind(name, action)
        flags.append({
            "name": name, "dest": action.dest, "type": _type_name(action), "default": default,
            "choices": list(action.choices) if action.choices else None, "help": action.help or "",
            "group": groups.get(id(action), ""), "kind": kind, "per_device": dict(per_device) if per_device else None,
            "alias_of": action.dest if name != action.dest else None,
            "roots": list(PATH_FLAGS.get(action.dest, DEFAULT_PATH_ROOTS)) if kind == "path" else None,
            "refused_reason": REFUSED_FLAGS.get(action.dest) if kind == "refused" else None,
            # the trainer's own bounds, so the form can say them at the field before the server refuses a value
            "min": MINIMUM_FLAG_VALUES.get(action.dest), "max": MAXIMUM_FLAG_VALUES.get(action.dest),
        })
    return {"name": stage, "script": f"trainer/train_{stage}.py", "description": parser.description or "",
            "flags": flags}


def confine_path(flag: str, value: str, roots) -> str:
    """The path relative to the repository root if it resolves inside one of `roots`, else RequestError."""
    if "\x00" in value or not value.strip():
        raise RequestError(400, f"--{flag}: empty path or NUL byte")
    p = Path(value).expanduser()
    resolved = (p if p.is_absolute() else ROOT / p).resolve()
    for root in roots:
        base = (ROOT / root).resolve()
        if resolved == base or base in resolved.parents:
            return display_path(resolved)
    raise RequestError(400, f"--{flag} {value!r} resolves to {resolved}, outside the allowed folders "
                            f"{', '.join(r + '/' for r in roots)} of the project; put the file there (or a path "
                            f"relative to the repository root, e.g. {roots[0]}/...)")


def validate_flags(stage: str, flags) -> list:
    """JSON flags -> the trainer argv (after the script name). Every refusal is a RequestError(400)."""
    if stage not in STAGES:
        raise RequestError(400, f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    if not isinstance(flags, dict):
        raise RequestError(400, "flags must be a JSON object {\"flag_name\": value, ...}")
    actions = _flag_actions(stage)
    argv = []
    for raw_name, value in flags.items():
        name = raw_name[2:] if isinstance(raw_name, str) and raw_name.startswith("--") else raw_name
        if not isinstance(name, str) or name not in actions:
            raise RequestError(400, f"unknown flag {raw_name!r} for stage {stage} (see GET /api/stages for its flags)")
        action = actions[name]
        kind = flag_kind(name, action)
        if kind == "refused":
            raise RequestError(400, f"--{name} is refused by the training manager: "
                                    f"{REFUSED_FLAGS[action.dest]}")
        if value is None:  # null = the trainer's default
            continue
        typ = _type_name(action)
        if isinstance(value, (bool, list, dict)):  # bool first: isinstance(True, int) holds, and True is not 1 here
            raise RequestError(400, f"--{name}: expected {typ}, got {json.dumps(value)}")
        if typ == "int":
            if not isinstance(value, int):
                raise RequestError(400, f"--{name}: expected an integer, got {json.dumps(value)}")
            text = str(value)
        elif typ == "float":
            # JSON has no inf/nan, but Python's json.loads accepts Infinity and NaN; a learning rate of inf trains
            # to NaN weights (all 21 tensors of a tiny model, issue 27), so non-finite numbers never pass
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RequestError(400, f"--{name}: expected a finite number, got {json.dumps(value)}")
            text = repr(float(value))
        else:
            if not isinstance(value, str):
                raise RequestError(400, f"--{name}: expected a string, got {json.dumps(value)}")
            if kind == "path":
                text = confine_path(name, value, PATH_FLAGS.get(action.dest, DEFAULT_PATH_ROOTS))
                if action.dest == "data_path" and not (ROOT / text).is_file():
                    # checked here, not 30 s later when the trainer has imported torch and loaded the tokenizer
                    found = sorted(display_path(p) for p in (ROOT / "dataset").glob("**/*.jsonl"))[:8]
                    raise RequestError(400, f"--data_path {value!r}: no such file; JSONL files under dataset/: "
                                            f"{', '.join(found) or 'none'} (GET /api/datasets lists them all)")
            elif kind == "name":
                if not NAME_RE.match(value) or ".." in value:
                    raise RequestError(400, f"--{name} {value!r}: a weight/adapter name is letters, digits, _ . - "
                                            f"(no paths), e.g. full_sft")
                text = value
            else:
                if not PLAIN_STRING_RE.match(value):
                    raise RequestError(400, f"--{name} {value!r}: only letters, digits and _ . : + - are accepted")
                text = value
        if action.choices and (int(text) if typ == "int" else float(text) if typ == "float" else text) \
                not in action.choices:
            raise RequestError(400, f"--{name} {text}: choose one of {', '.join(map(str, action.choices))}")
        argv += [f"--{name}", text]
    parse_like_trainer(stage, argv)
    return argv


def parse_like_trainer(stage: str, argv: list) -> argparse.Namespace:
    """Parse as the trainer will, plus the trainer's own minimum-value checks; errors become RequestError."""
    parser = stage_parser(stage)

    def fail(message):
        raise RequestError(400, f"stage {stage}: {message}")

    old = parser.error, parser.exit
    parser.error, parser.exit = fail, lambda status=0, message=None: fail(message or f"exit {status}")
    try:
        args = parser.parse_args(argv)
    finally:
        parser.error, parser.exit = old
    plain = argparse.Namespace(**{k: _plain_default(v) for k, v in vars(args).items()})
    try:
        check_common_args(plain)
    except UserError as e:
        raise RequestError(400, str(e)) from None
    return args


def metrics_path_for(stage: str, args) -> Path:
    """Where the trainer writes its metrics log (see docs: {save_dir}/{weight_stem}.metrics.jsonl)."""
    name = args.lora_name if stage == "lora" else args.save_weight
    save_dir = Path(args.save_dir)
    stem = weight_stem(name, args.hidden_size, args.use_moe)
    return (save_dir if save_dir.is_absolute() else ROOT / save_dir) / f"{stem}.metrics.jsonl"
