"""The one place that names, writes, reads and finds weights: `.pth` files, their `.json` sidecars, resume states,
LoRA folders, and the models built from them.

    out/{stage}_{hidden}[_moe].pth        half-precision state_dict in MiniMind2's layout
    out/{stage}_{hidden}[_moe].json       sidecar: {"format", "model_config", "train_args"}
    checkpoints/{stage}_{hidden}[_moe]_resume.pth   model + optimizer + data position + RNG states
    out/lora/{name}_{hidden}[_moe]/       PEFT adapter folder

Trainers write through `save_weights`/`atomic_save`; eval_llm.py, the server, the converters and the web demo find and
load through `resolve_weight`/`load_model`. Every write goes to a per-process temp file that is fsynced, then
renamed; resume states are read with weights_only=True (`load_resume_state`), so a foreign file cannot run code.
"""
import argparse
import functools
import glob
import inspect
import json
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .model_minimind import MiniMindConfig, MiniMindForCausalLM, count_parameters
from .runtime import ROOT, UserError, display_path, init_distributed_mode, repo_path


def info(msg: str) -> None:
    """Status lines go to stderr, so `python eval_llm.py auto > answers.txt` keeps only the answers."""
    print(msg, file=sys.stderr, flush=True)


TOKENIZER_DIR = ROOT / "model"


SIDECAR_CONFIG_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                       "intermediate_size", "vocab_size", "max_position_embeddings", "rope_theta", "rms_norm_eps",
                       "use_moe", "num_experts_per_tok", "n_routed_experts", "n_shared_experts",
                       "norm_topk_prob", "aux_loss_alpha", "seq_aux", "inference_rope_scaling")


def weight_stem(stage: str, hidden_size: int, use_moe) -> str:
    return f"{stage}_{hidden_size}{'_moe' if int(use_moe) else ''}"


def weight_path(save_dir, stage: str, hidden_size: int, use_moe) -> Path:
    return repo_path(save_dir) / f"{weight_stem(stage, hidden_size, use_moe)}.pth"


def resume_path(checkpoint_dir, stage: str, hidden_size: int, use_moe) -> Path:
    return repo_path(checkpoint_dir) / f"{weight_stem(stage, hidden_size, use_moe)}_resume.pth"


def sidecar_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def ensure_writable_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {folder}: {e.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"output folder {folder} is not writable; choose another with --save_dir/--checkpoint_dir")


def _temp_path(path: Path) -> Path:
    """A temp name of this process next to `path`: two writers of one file (a CLI run and the training manager)
    never write into the same temp file, and a kill leaves `{name}.{pid}.tmp`, recognisable as stale."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: keep other processes' temp files
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process, or a platform without signal 0: keep its file
        return True
    return True


def remove_stale_temps(path: Path) -> list:
    """Delete temp files of `path` left by a killed writer: `{name}.tmp` (older versions) and `{name}.{pid}.tmp` of a
    process that is gone (a kill -9 mid-save of a 104M model leaves ~200 MB each). Returns what was removed."""
    path, removed = Path(path), []
    for tmp in path.parent.glob(glob.escape(path.name) + ".*tmp"):
        middle = tmp.name[len(path.name) + 1:-len("tmp")].rstrip(".")
        stale = middle == "" or (middle.isdigit() and (int(middle) == os.getpid() or not _pid_alive(int(middle))))
        if stale:
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass  # read-only or already gone: the new save still goes through its own temp name
    return removed


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """write(file) into a temp file, fsync it, rename it over `path`, fsync the folder: after a crash or power loss
    the file is the old one or the complete new one (rename without fsync can leave a zero-length file on ext4)."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    remove_stale_temps(path)
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_save(obj, path: Path) -> None:
    """torch.save through a temp file (see _atomic_write): an interrupted save leaves the previous file intact."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: Path) -> None:
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(obj, path: Path) -> None:
    atomic_write_text(json.dumps(obj, ensure_ascii=False, indent=2), path)


def unwrap(model):
    """The plain MiniMind model inside DDP and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def tokenizer_fingerprint(folder: Path) -> str:
    """16 hex digits of a hash over the vocabulary (token -> id, added tokens included) of folder/tokenizer.json:
    equal for equal vocabularies, whatever the formatting of the file. Cached per file version, since every save of
    a run records it and parsing the 6400-token file each time would be wasted work."""
    path = (Path(folder) / "tokenizer.json").resolve()
    try:
        stat = path.stat()
    except OSError as e:
        raise UserError(f"cannot read the vocabulary of {path}: {e.strerror}") from None
    return _vocabulary_hash(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _vocabulary_hash(path: str, mtime_ns: int, size: int) -> str:
    import hashlib
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        vocab = dict(data["model"]["vocab"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read the vocabulary of {path}: {e}") from None
    vocab.update({t["content"]: t["id"] for t in data.get("added_tokens", [])})
    return hashlib.sha256(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()).hexdigest()[:16]


def tokenizer_record(folder: Path) -> dict:
    return {"path": display_path(folder), "fingerprint": tokenizer_fingerprint(folder)}


def weights_tokenizer(weights: Path, given=None) -> Path:
    """The tokenizer folder to use with `weights`: --tokenizer_path when given, else the one its sidecar records,
    else model/ with a warning when there is no sidecar at all. Refuses a tokenizer whose vocabulary differs from
    the one the weights were trained with."""
    try:
        sidecar = read_sidecar(weights)
    except ValueError:
        sidecar = {}
    record = (sidecar or {}).get("tokenizer")
    folder = repo_path(given) if given else (repo_path(record["path"]) if record else TOKENIZER_DIR)
    if sidecar is None and not given and Path(weights).is_file():
        warn_no_sidecar(Path(weights))
    if record and not given and not (folder / "tokenizer.json").is_file():
        raise UserError(f"{weights} was trained with the tokenizer in {record['path']}, which is gone; "
                        f"restore it or pass --tokenizer_path FOLDER with the same vocabulary")
    if record and tokenizer_fingerprint(folder) != record["fingerprint"]:
        raise UserError(f"{weights} was trained with the tokenizer in {record['path']} (vocabulary "
                        f"{record['fingerprint']}), but {display_path(folder)} has another vocabulary "
                        f"({tokenizer_fingerprint(folder)}); use --tokenizer_path {record['path']}")
    return folder


def warn_no_sidecar(weights: Path) -> None:
    """A .pth without our .json sidecar is most likely a MiniMind2 download, whose ids mean other strings in this
    repo's tokenizer (4 of 6400 ids agree): paired with model/ it answers garbage, so say so loudly and name the fix."""
    info(f"WARNING / 警告: {weights} has no sidecar ({sidecar_path(weights).name}), so nothing records which tokenizer "
         f"it was trained with; using this repository's {display_path(TOKENIZER_DIR)}/. Weights downloaded from "
         f"MiniMind (MiniMind2) need MiniMind's own tokenizer, or every answer is garbage: pass --tokenizer_path "
         f"/path/to/minimind/model (the folder with MiniMind's tokenizer.json). If the weights were trained with "
         f"this repository's tokenizer, pass --tokenizer_path {display_path(TOKENIZER_DIR)} to say so.\n"
         f"  权重没有 .json 记录，不知道它配哪个分词器：MiniMind2 官方权重请用 --tokenizer_path 指向 MiniMind 的 model/ 目录。")


def save_weights(model, path: Path, args: argparse.Namespace) -> None:
    """Half-precision state_dict in MiniMind2's layout, plus a JSON sidecar with config and training args."""
    model = unwrap(model)
    state = {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items()}
    bad = nonfinite_tensors(state)
    if bad:  # never replace a good file with NaN weights (the trainer stops before this; other callers too)
        raise UserError(f"not saving {path}: {len(bad)} of {len(state)} tensors hold NaN/inf in half precision "
                        f"(e.g. {bad[0]}); the existing file is kept")
    atomic_save(state, path)
    config = {k: getattr(model.config, k) for k in SIDECAR_CONFIG_KEYS}
    tokenizer = repo_path(getattr(args, "tokenizer_path", None) or TOKENIZER_DIR)
    atomic_write_json({"format": "minimind2-pth", "model_config": config, "tokenizer": tokenizer_record(tokenizer),
                       "train_args": {k: v for k, v in vars(args).items() if jsonable(v)}}, sidecar_path(path))


def jsonable(value) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, tuple))


def read_sidecar(weights: Path) -> Optional[dict]:
    side = sidecar_path(weights)
    return json.loads(side.read_text(encoding="utf-8")) if side.is_file() else None


WEIGHT_NAME = re.compile(r"^(?P<stage>.+)_(?P<hidden>\d+)(?P<moe>_moe)?\.pth$")


def weights_nearby(path: Path) -> list:
    """Weight files a user who asked for `path` may have meant: same stage anywhere under out/ (e.g. out/demo/
    after scripts/demo.sh), else every weight in the folder asked for. [(path, sizes flags), ...], at most 8."""
    path = Path(path)
    m = WEIGHT_NAME.match(path.name)
    stage = m.group("stage") if m else None
    folders = [path.parent, ROOT / "out"]
    if (ROOT / "out").is_dir():
        folders += sorted(d for d in (ROOT / "out").iterdir() if d.is_dir() and d.name != "lora")
    seen, same_stage, same_folder = set(), [], []
    for folder in folders:
        if not folder.is_dir() or folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        for f in sorted(folder.glob("*.pth")):
            fm = WEIGHT_NAME.match(f.name)
            if fm and f != path and fm.group("stage") == stage:
                same_stage.append(f)
            elif fm and folder == path.parent:
                same_folder.append(f)
    return [(f, size_flags(f)) for f in (same_stage or same_folder)[:8]]


def size_flags(weights: Path) -> str:
    """`--save_dir D --hidden_size H --num_hidden_layers L [--use_moe 1]` that name this weight file."""
    try:
        cfg = (read_sidecar(weights) or {}).get("model_config", {})
    except ValueError:
        cfg = {}
    m = WEIGHT_NAME.match(weights.name)
    hidden = cfg.get("hidden_size", int(m.group("hidden")) if m else None)
    flags = [f"--save_dir {display_path(weights.parent)}", f"--hidden_size {hidden}"]
    if "num_hidden_layers" in cfg:
        flags.append(f"--num_hidden_layers {cfg['num_hidden_layers']}")
    if cfg.get("use_moe") or (m and m.group("moe")):
        flags.append("--use_moe 1")
    return " ".join(flags)


def missing_weight_message(path: Path, hint: str = "") -> str:
    """'weight file not found' plus how to make it and which existing weights (and flags) may be meant."""
    lines = [f"weight file not found: {path}", f"  {hint or 'train the stage that produces it first'}"]
    nearby = weights_nearby(path)
    if nearby:
        lines.append("  weights that exist (use them with these flags):")
        lines += [f"    {display_path(f)}: {flags}" for f, flags in nearby]
    return "\n".join(lines)


def load_weights(model, path: Path, hint: str = "") -> None:
    """Strict load with a message that names the file and the mismatch (never a silent partial load)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(missing_weight_message(path, hint))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"cannot read weight file {path}: {e}") from None
    check_state_matches(model, state, path)
    unwrap(model).load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})


def check_state_matches(model, state, path: Path, what: str = "weight file") -> None:
    """UserError naming the file, the model's sizes and the first mismatches when `state` (a state_dict read from
    `path`) does not fit `model` key for key and shape for shape; used for weights and resume states alike."""
    own = unwrap(model).state_dict()
    if not isinstance(state, dict):
        raise UserError(f"{what} {path} holds a {type(state).__name__}, not a state_dict")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and torch.is_tensor(state[k]) and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        cfg = unwrap(model).config
        lines = [f"{what} {path} does not match the model (hidden_size={cfg.hidden_size}, "
                 f"num_hidden_layers={cfg.num_hidden_layers}, use_moe={int(cfg.use_moe)}):"]
        if missing:
            lines.append(f"  {len(missing)} keys missing from the file, e.g. {missing[:3]}")
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected keys in the file, e.g. {unexpected[:3]}")
        lines += [f"  shape mismatch {s}" for s in shapes[:3]]
        lines.append("  check --hidden_size / --num_hidden_layers / --use_moe against the file's .json sidecar")
        raise UserError("\n".join(lines))


def nonfinite_tensors(state: dict, dtype: Optional[torch.dtype] = None) -> list:
    """Names of floating-point tensors in a state_dict holding NaN or inf, once cast to `dtype` when given (fp16
    weight files: a finite fp32 weight past 65504 becomes inf there). One host sync for all of them."""
    names = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and v.numel()]
    if not names:
        return []
    # the largest magnitude per tensor decides (amax propagates NaN); casting only it costs one reduction, not a copy
    peaks = torch.stack([state[k].detach().abs().amax().float() for k in names])
    finite = torch.isfinite(peaks.to(dtype) if dtype is not None else peaks).cpu()
    return [k for k, ok in zip(names, finite.tolist()) if not ok]


def _numpy_array_globals() -> list:
    """What unpickling a numpy array needs: the RNG state in resume files written before the RNG states were stored
    as plain lists. `_reconstruct` only builds an ndarray; it runs no code of the file's choosing. Listed under both
    the numpy 2 (`numpy._core`) and numpy 1 (`numpy.core`) names, since the file records the writer's spelling."""
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    names = [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"),
             (reconstruct, "numpy._core.multiarray._reconstruct")]
    return names + [np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_resume_state(path: Path, allowed: tuple = ()) -> dict:
    """A resume state read with weights_only=True: tensors and plain Python data only, so a resume file copied in
    from elsewhere cannot run code when loaded (the unrestricted unpickler would build any object, os.system included).
    `allowed` adds classes the caller knows to be plain data holders (unpickling one only sets its attributes)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_array_globals() + list(allowed)):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))  # torch names the first forbidden object, e.g. posix.system
        reason = f"it asks for {found.group(1)}" if found else str(e).strip().splitlines()[-1][:200]
        raise UserError(f"resume state {path} holds Python objects that are not tensors or plain data, so it was "
                        f"refused (loading it could run code; {reason})\n  only resume from files this "
                        f"project wrote; delete it (or run without --from_resume) to start fresh") from None
    except Exception as e:  # a truncated file (kill -9 of an older version mid-write) or not a torch file at all
        raise UserError(f"cannot read resume state {path}: {type(e).__name__}: {str(e)[:300]}; delete it (or run "
                        f"without --from_resume) to start fresh") from None
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"{path} is not a resume state of this project (no 'model' entry)")
    return state


# the files that make up a tokenizer folder; the chat template lives inside tokenizer_config.json, which every
# transformers version (and vLLM, through AutoTokenizer) understands
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def load_tokenizer(folder: Path = TOKENIZER_DIR):
    """The tokenizer in `folder` (default model/), or a UserError that names the folder and how to restore it."""
    from transformers import AutoTokenizer
    folder = Path(folder)
    fix = ("restore the committed files (git checkout -- model/tokenizer.json model/tokenizer_config.json) or "
           "train a new one with python trainer/train_tokenizer.py")
    missing = [name for name in TOKENIZER_FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(f"tokenizer folder {folder} lacks {', '.join(missing)}; {fix}")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001 - a truncated or hand-edited tokenizer.json fails in many ways
        raise UserError(f"cannot load the tokenizer in {folder}: {type(e).__name__}: {str(e)[:200]}; {fix}") from None


def stage_script(stage: str) -> str:
    """The trainer script (without train_ and .py) that produces weights of this stage name."""
    return {"ppo_actor": "ppo", "full_dist": "distillation", "tool_sft": "full_sft"}.get(stage, stage)


# ------------------------------------------------------------------------------------------ finding and loading

def add_model_args(p: argparse.ArgumentParser) -> None:
    """The flags that choose the model to run (eval_llm.py, the API server): what `load_model` reads."""
    add = p.add_argument_group("model / 模型").add_argument
    add("--weight", default="full_sft", help="权重阶段名 / stage name of the weights: out/{weight}_{hidden}[_moe].pth")
    add("--save_dir", default="out", help="权重目录 / folder with the .pth weights and their .json sidecars")
    add("--load_from", default=None,
        help="transformers 模型目录（代替 .pth）/ a Hugging Face folder loaded with from_pretrained instead of "
             "a .pth ('model' = the native .pth, MiniMind's spelling)")
    add("--trust_remote_code", type=int, default=0, choices=[0, 1],
        help="1 = 允许 --load_from 目录里的自定义代码 / run custom code shipped in the --load_from folder")
    add("--lora_weight", default=None,
        help="LoRA 适配器名或路径，合并进模型 / adapter name under {save_dir}/lora/ (lora_identity -> "
             "lora/lora_identity_{hidden}[_moe]/) or a folder path; merged into the model")
    add("--hidden_size", type=int, default=None, help="模型宽度，默认读 sidecar / model width; default: from the sidecar")
    add("--num_hidden_layers", type=int, default=None, help="层数，默认读 sidecar / blocks; default: from the sidecar")
    add("--use_moe", type=int, default=None, choices=[0, 1], help="1 = MoE；默认读 sidecar / default: from the sidecar")
    add("--inference_rope_scaling", type=int, nargs="?", const=1, default=0, choices=[0, 1],
        help="1 = YaRN 外推长上下文 / YaRN RoPE scaling (2048 trained positions x16) for long contexts")
    add("--device", default=None, help="npu[:i] / cuda[:i] / mps / cpu；默认自动 / default: auto (NPU > CUDA > MPS > CPU)")
    add("--tokenizer_path", default=None,
        help="分词器目录；默认用权重 .json 记录的那个 / tokenizer folder; default: the one the weights' sidecar "
             "records (model/ for files without a record); a different vocabulary is refused")


def weight_candidates(save_dir, stage: str) -> list:
    """(hidden_size, use_moe) of every `{stage}_{hidden}[_moe].pth` or `.json` in save_dir, sorted."""
    folder = repo_path(save_dir)
    found = set()
    if folder.is_dir():
        for f in folder.iterdir():
            m = WEIGHT_NAME.match(f.stem + ".pth") if f.suffix in (".pth", ".json") else None
            if m and m.group("stage") == stage:
                found.add((int(m.group("hidden")), int(bool(m.group("moe")))))
    return sorted(found)


def default_size(name: str):
    """MiniMindConfig's default for a size field (hidden_size 512, num_hidden_layers 8: MiniMind2-Small), read
    from the config class so this module never repeats the numbers."""
    return inspect.signature(MiniMindConfig.__init__).parameters[name].default


def sizes_from_state_dict(path: Path) -> dict:
    """Width, depth and MoE read off a sidecar-less .pth (e.g. one downloaded from MiniMind's releases)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"cannot read weight file {path}: {e}") from None
    if "model.embed_tokens.weight" not in state:
        raise UserError(f"{path} is not a MiniMind state_dict (no model.embed_tokens.weight)")
    layers = {int(m.group(1)) for k in state for m in [re.match(r"model\.layers\.(\d+)\.", k)] if m}
    return {"hidden_size": state["model.embed_tokens.weight"].shape[1], "num_hidden_layers": len(layers),
            "use_moe": any(".mlp.experts." in k for k in state)}


def train_command(stage: str, cfg: dict, save_dir) -> str:
    """The command that writes this weight file, with the flags that differ from the trainer's defaults."""
    script = stage_script(stage)
    cmd = f"python trainer/train_{script}.py"
    if script != stage:
        cmd += f" --save_weight {stage}"
    for name in ("hidden_size", "num_hidden_layers"):  # the trainers' defaults are the config's
        if cfg.get(name, default_size(name)) != default_size(name):
            cmd += f" --{name} {cfg[name]}"
    if cfg.get("use_moe"):
        cmd += " --use_moe 1"
    if str(save_dir) != "out":
        cmd += f" --save_dir {save_dir}"
    return cmd


def resolve_weight(args) -> tuple:
    """(weight path, MiniMindConfig kwargs, where the sizes came from) for the native .pth route.

    Sizes: command-line flags win, then the sidecar, then the tensor shapes of a sidecar-less file, then
    the config's defaults (MiniMind2-Small: 512 wide, 8 layers, dense).
    """
    hidden, moe = args.hidden_size, args.use_moe
    candidates = [c for c in weight_candidates(args.save_dir, args.weight) if moe is None or c[1] == moe]
    if hidden is None:
        if len(candidates) > 1:
            names = ", ".join(weight_stem(args.weight, h, m) + ".pth" for h, m in candidates)
            pick = " or ".join(f"--hidden_size {h} --use_moe {m}" for h, m in candidates)
            raise UserError(f"{repo_path(args.save_dir)} holds several '{args.weight}' weights ({names}); "
                            f"choose one with {pick}")
        hidden, moe = candidates[0] if candidates else (default_size("hidden_size"), moe or 0)
    elif moe is None:  # width given: take the dense file unless only a MoE one of that width exists
        moe = int([m for h, m in candidates if h == hidden] == [1])
    path = weight_path(args.save_dir, args.weight, hidden, moe)

    try:
        sidecar = read_sidecar(path)
    except ValueError as e:
        raise UserError(f"cannot read sidecar {sidecar_path(path)}: {e}") from None
    if sidecar is not None:
        cfg, source = dict(sidecar["model_config"]), f"sizes from {sidecar_path(path).name}"
    elif path.is_file():
        cfg, source = sizes_from_state_dict(path), "no sidecar: sizes read from the tensor shapes"
    else:
        cfg = {"num_hidden_layers": default_size("num_hidden_layers")}
        source = (f"no weight file or sidecar: assuming the default size {default_size('hidden_size')}/"
                  f"{cfg['num_hidden_layers']}/dense (MiniMind2-Small)")
    cfg.update(hidden_size=hidden, use_moe=bool(moe))
    if args.num_hidden_layers is not None:
        cfg["num_hidden_layers"] = args.num_hidden_layers
    return path, cfg, source


def lora_dir(args, config) -> Path:
    """A folder path as given, else {save_dir}/lora/{name}_{hidden}[_moe] (MiniMind's naming)."""
    given = repo_path(args.lora_weight)
    if given.is_dir():
        return given
    stem = weight_stem(args.lora_weight, config.hidden_size, getattr(config, "use_moe", False))
    return repo_path(args.save_dir) / "lora" / stem


def load_hf_folder(args):
    from transformers import AutoConfig, AutoModelForCausalLM
    folder = repo_path(args.load_from)
    if not (folder / "config.json").is_file():
        raise UserError(f"--load_from {args.load_from}: no config.json in {folder}; "
                        f"pass a folder written by save_pretrained (or leave --load_from out to use a .pth)")
    remote = bool(args.trust_remote_code)
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=remote)
    if args.inference_rope_scaling:
        if isinstance(config, MiniMindConfig):
            config.inference_rope_scaling = True
        else:
            info(f"--inference_rope_scaling ignored: {type(config).__name__} is not a MiniMind config")
    model = AutoModelForCausalLM.from_pretrained(str(folder), config=config, trust_remote_code=remote,
                                                 dtype=torch.float32)
    if not isinstance(model, MiniMindForCausalLM):
        # Engine decodes with MiniMind's StaticKVCache, which only MiniMind's own attention understands.
        hint = " (drop --trust_remote_code so this repo's MiniMind class is used)" if remote else ""
        raise UserError(f"--load_from {folder}: got {type(model).__name__}; the shared Engine decodes "
                        f"MiniMindForCausalLM models only{hint}")
    has_tokenizer = (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()
    if has_tokenizer:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=remote)
    else:
        tokenizer = load_tokenizer(repo_path(args.tokenizer_path) if getattr(args, "tokenizer_path", None)
                                   else TOKENIZER_DIR)
    info(f"model: {folder} (transformers folder, tokenizer from {folder if has_tokenizer else 'model/'})")
    return model, tokenizer


def load_native(args):
    path, cfg, source = resolve_weight(args)
    cfg["inference_rope_scaling"] = bool(args.inference_rope_scaling)
    model = MiniMindForCausalLM(MiniMindConfig(**cfg))
    load_weights(model, path, hint=f"train it with: {train_command(args.weight, cfg, args.save_dir)}")
    tokenizer = weights_tokenizer(path, getattr(args, "tokenizer_path", None))
    c = model.config
    info(f"model: {path} (hidden_size {c.hidden_size}, {c.num_hidden_layers} layers, "
         f"{'MoE' if c.use_moe else 'dense'}{', YaRN x16' if c.inference_rope_scaling else ''}; {source}; "
         f"tokenizer {display_path(tokenizer)})")
    return model, load_tokenizer(tokenizer)


def is_native(args) -> bool:
    """No --load_from, or MiniMind's default spelling `--load_from model`: the .pth route."""
    return args.load_from in (None, "", "model")


def load_model(args):
    """Model in eval mode on the detected device (bf16 CUDA, fp16 NPU, fp32 otherwise), LoRA merged; tokenizer."""
    ctx = init_distributed_mode(args.device)
    model, tokenizer = load_native(args) if is_native(args) else load_hf_folder(args)
    if args.lora_weight and args.lora_weight.lower() != "none":
        from model.model_lora import load_lora, merge_lora
        folder = lora_dir(args, model.config)
        model = merge_lora(load_lora(model, folder))  # merged in fp32, before the cast to half precision
        info(f"lora: merged {folder}")
    model = model.to(ctx.device, ctx.dtype).eval()
    info(f"{count_parameters(model) / 1e6:.2f}M parameters on {ctx.device} ({str(ctx.dtype).replace('torch.', '')})")
    return model, tokenizer
