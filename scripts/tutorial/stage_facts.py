"""Facts from the trainers and scripts: each stage's flags from its own parser, the LR curve, deployment
commands validated against their scripts' parsers, and the Ascend Dockerfile / run_all_npu.sh stages."""
import importlib
import os
import re
import shlex
import subprocess


from model.checkpoint import weight_path
from model.runtime import ROOT
from scripts.tutorial.common import jsonable_default, parser_flags, r
from trainer.rl_utils import finish_rl_args
from trainer.trainer_utils import build_parser, lr_at

# Stage scripts in the order of MiniMind's chain (pretrain -> full_sft -> lora | dpo -> reason -> RL | distillation).
STAGE_MODULES = ["pretrain", "full_sft", "lora", "dpo", "reason", "ppo", "grpo", "spo", "distillation"]

def stage_facts() -> list:
    base = {a.dest: a.default for a in build_parser("base")._actions if a.option_strings}
    stages = []
    for name in STAGE_MODULES:
        module = importlib.import_module(f"trainer.train_{name}")
        parser = module.get_parser()
        defaults = vars(parser.parse_args([]))
        from_weight = defaults.get("from_weight")
        if from_weight is None and "reasoning" in defaults:  # RL: resolved from --reasoning (rl_utils.finish_rl_args)
            args = parser.parse_args([])
            finish_rl_args(args)
            from_weight = args.from_weight
        doc = (module.__doc__ or "").strip().splitlines()
        args = parser.parse_args([])
        # what the stage writes, from the trainer's own path code: LoRA writes an adapter folder under out/lora/
        # (train_lora.adapter_dir), not a {save_weight}.pth like the other stages
        if hasattr(module, "adapter_dir"):
            output = module.adapter_dir(args).relative_to(ROOT).as_posix() + "/"
        else:
            output = weight_path(args.save_dir, args.save_weight, args.hidden_size, args.use_moe).relative_to(ROOT).as_posix()
        stages.append({
            "stage": name, "script": f"trainer/train_{name}.py", "summary": doc[0] if doc else "",
            "description": parser.description, "save_weight": defaults.get("save_weight"),
            "from_weight": from_weight, "output": output,
            "defaults": {k: jsonable_default(defaults[k]) for k in (
                "epochs", "batch_size", "learning_rate", "accumulation_steps", "max_seq_len", "warmup_steps")},
            "flags": parser_flags(parser, base),
        })
    return stages


def lr_facts() -> list:
    curves = []
    for peak, total, warmup in ((5e-4, 1000, 0), (5e-4, 1000, 100), (1e-6, 400, 0)):
        steps = list(range(0, total + 1, total // 100))
        curves.append({"peak": peak, "total": total, "warmup": warmup,
                       "points": [[s, r(lr_at(s, total, peak, warmup), 10)] for s in steps]})
    return curves


# ------------------------------------------------------------------------------------------------------------- RoPE

# Commands the deployment tab shows. Ours are parsed by the script's own parser here, so a renamed flag breaks the
# export; external tools (vLLM, llama.cpp, Ollama) are shown as not run on this project's machines.
DEPLOY_COMMANDS = [
    ("hf", "python scripts/convert_to_hf.py --weight full_sft", "scripts.convert_to_hf"),
    ("hf", "python scripts/convert_to_hf.py --weight full_sft --hidden_size 640 --use_moe 1", "scripts.convert_to_hf"),
    ("hf", "python scripts/convert_model.py to_hf --weight full_sft", "scripts.convert_model"),
    ("vllm", "python scripts/convert_to_hf.py --weight full_sft", "scripts.convert_to_hf"),
    ("vllm", ("vllm serve out/minimind-hf --served-model-name minimind --enable-auto-tool-choice "
              "--tool-call-parser hermes"), None),
    ("vllm", "bash scripts/run_all_npu.sh serve", "run_all"),
    ("gguf", "python scripts/convert_to_hf.py --weight full_sft --gguf", "scripts.convert_to_hf"),
    ("gguf", "llama-cli -m out/minimind-hf/minimind-f16.gguf --jinja -cnv", None),
    ("ollama", "cd out/minimind-hf && ollama create minimind -f Modelfile && ollama run minimind", None),
    ("serve", "python scripts/serve_openai_api.py --weight full_sft --port 8998", "scripts.serve_openai_api"),
    ("serve", "python scripts/chat_openai_api.py --tools scripts/tools_example.json", "scripts.chat_openai_api"),
    ("serve", "python eval_llm.py chat --weight full_sft", "eval_llm"),
]

# The tiny model behind the attention / KV cache / MoE views: MoE so that routing is real, 4 query heads on 2 KV
# where each command's parser lives: the thin entry points parse with their package's build_parser, and nothing
# imports an entry point (tests/test_layout.py); eval_llm.py at the root keeps its own parser
PARSER_HOME = {"scripts.convert_to_hf": "scripts.convert.hf", "scripts.serve_openai_api": "scripts.serve.api",
               "scripts.chat_openai_api": "scripts.client.chat"}


def validate_command(command: str, module: str | None) -> dict:
    """Parse our commands with the script's own parser (a renamed flag fails the export)."""
    if module is None:
        return {"checked": "external tool, not run on this project's machines / 外部工具，未在本项目机器上运行"}
    argv = shlex.split(command)
    if module == "run_all":
        proc = subprocess.run(["bash", str(ROOT / argv[1]), "--dry-run", "--local", *argv[2:]], cwd=ROOT, check=False,
                              capture_output=True, text=True, env={**os.environ, "PYTHON": "python3"})
        if proc.returncode != 0:
            raise RuntimeError(f"{command} --dry-run failed: {proc.stderr}")
        return {"checked": "run_all_npu.sh --dry-run accepts it"}
    mod = importlib.import_module(PARSER_HOME.get(module, module))
    start = argv.index(next(a for a in argv if a.endswith(".py"))) + 1
    try:
        mod.build_parser().parse_args(argv[start:])
    except SystemExit:
        raise RuntimeError(f"{command}: {module}.build_parser() rejects these flags") from None
    return {"checked": f"{module}.build_parser() accepts it"}


def deployment_facts() -> dict:
    commands = [{"target": target, "command": cmd, **validate_command(cmd, module)}
                for target, cmd, module in DEPLOY_COMMANDS]
    scripts = {}
    for module in ("scripts.convert_to_hf", "scripts.serve_openai_api"):
        scripts[module.replace(".", "/") + ".py"] = parser_flags(importlib.import_module(PARSER_HOME[module]).build_parser())
    return {"commands": commands, "script_flags": scripts}


def _usage_block(text: str, header: str) -> list:
    """Lines of one section of run_all_npu.sh's --help (between `header` and the next unindented line)."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith(header):
            inside = True
            continue
        if inside and line and not line.startswith(" "):
            break
        if inside and line.strip():
            lines.append(line.strip())
    return lines


def ascend_facts() -> dict:
    script = ROOT / "scripts" / "run_all_npu.sh"
    env = {k: v for k, v in os.environ.items() if k not in ("ASCEND_RT_VISIBLE_DEVICES", "NPROC_PER_NODE")}
    env["PYTHON"] = "python3"
    help_text = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, check=True,
                               cwd=ROOT).stdout
    dry = subprocess.run(["bash", str(script), "--dry-run", "--local", "demo"], capture_output=True, text=True,
                         cwd=ROOT, env=env, check=False)
    if dry.returncode != 0:
        raise RuntimeError(f"run_all_npu.sh --dry-run --local demo failed: {dry.stderr}")
    all_stages = re.search(r'^ALL_STAGES="([^"]+)"', script.read_text(encoding="utf-8"), re.MULTILINE).group(1).split()
    options = []
    for line in _usage_block(help_text, "Options:"):
        m = re.match(r"(-\S+(?:, -\S+)?(?: [A-Z]+)?(?:\.\.\.)?)\s{2,}(.*)", line)
        if m:
            options.append({"option": m.group(1), "help": m.group(2)})
        elif options:
            options[-1]["help"] += " " + line
    presets = {}
    for line in _usage_block(help_text, "Presets:"):
        # "all  = download build ... eval     core = ...", "demo = pretrain ... eval on the bundled data ..."
        for name, words in re.findall(r"(\w+)\s+=\s+([a-z_]+(?: [a-z_]+)*)", line):
            stages = []
            for word in words.split():
                if word not in all_stages:
                    break
                stages.append(word)
            presets[name] = stages
    dockerfile = (ROOT / "Dockerfile.ascend").read_text(encoding="utf-8")
    return {"dockerfile_path": "Dockerfile.ascend", "dockerfile": dockerfile,
            "dockerfile_args": dict(re.findall(r"^ARG (\w+)=(\S+)", dockerfile, re.MULTILINE)),
            "dockerfile_env": dict(re.findall(r"^\s*(?:ENV )?([A-Z_]+)=(\S+?)\s*\\?$", dockerfile.split("ENV", 1)[1]
                                              .split("\n\n")[0], re.MULTILINE)),
            "run_all_help": help_text, "all_stages": all_stages, "options": options, "presets": presets,
            "demo_dry_run": [line for line in dry.stdout.splitlines() if line.strip()]}


# ------------------------------------------------------------------------------------------------------------- main
