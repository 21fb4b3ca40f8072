"""Talk to a trained MiniMind: a fixed prompt set (`auto`) or an interactive chat (`chat`).

    python eval_llm.py                                   # auto: 8 fixed prompts, out/full_sft_*.pth
    python eval_llm.py chat --weight reason --historys 2 # chat with the reasoning model, 2 turns of memory
    python eval_llm.py auto --weight pretrain            # raw text continuation, no chat template
    python eval_llm.py chat --lora_weight lora_identity  # full_sft + out/lora/lora_identity_{hidden}/ merged in
    python eval_llm.py auto --load_from ./MiniMind2      # a transformers folder instead of a .pth

Sizes come from the weight file's .json sidecar, so `--hidden_size` is only needed when `--save_dir` holds
several sizes of one stage. All decoding goes through the shared `model.engine.Engine`.
"""
import argparse
import os
import re
import sys
import time
from pathlib import Path

import torch

from model.engine import Engine, SamplingParams
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM, count_parameters
from scripts.chat_protocol import read_questions
from trainer.trainer_utils import (UserError, stage_script, init_distributed_mode, load_tokenizer, load_weights,
                                   read_sidecar, repo_path, sidecar_path, user_errors, weight_path, weight_stem)

# Chat prompts: general knowledge, code, English, and a small word problem that a `reason` model answers in its
# <think>/<answer> format.
CHAT_PROMPTS = [
    "请介绍一下你自己。",
    "为什么海水是咸的？",
    "用Python写一个判断素数的函数。",
    "简单解释一下光合作用的过程。",
    "给第一次去北京旅游的人一些建议。",
    "What is the capital of France, and what is it known for?",
    "Explain in two sentences what a neural network is.",
    "小明有12颗糖，分给3个朋友每人3颗，他还剩几颗？",
]
# A pretrain model has never seen the chat template; it continues raw text (bos + prompt), as in MiniMind.
PRETRAIN_PROMPTS = [
    "中国的首都是",
    "水在一个标准大气压下的沸点是",
    "长城是中国古代",
    "秋天到了，树叶",
    "人工智能的发展",
    "学习一门新语言最好的方法是",
    "The sun rises in the",
    "Python is a programming language that",
]
REASONING_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
DIM, RESET = "\033[2m", "\033[0m"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="MiniMind 模型评测与对话 / evaluate and chat with a MiniMind model",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("mode", nargs="?", default="auto", choices=["auto", "chat"],
        help="auto = 回答一组固定问题后退出 / answer a fixed prompt set and exit; chat = 交互对话 / interactive chat")
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
    add("--temperature", type=float, default=0.85, help="采样温度，0 = 贪心 / sampling temperature, 0 = greedy")
    add("--top_p", type=float, default=0.85, help="nucleus 采样阈值 / nucleus sampling mass")
    add("--max_new_tokens", type=int, default=512, help="每次回答的最大新 token 数 / max tokens per answer")
    add("--seed", type=int, default=None, help="随机种子（每个回答相同）/ sampling seed for every answer; default random")
    add("--device", default=None, help="npu[:i] / cuda[:i] / mps / cpu；默认自动 / default: auto (NPU > CUDA > MPS > CPU)")
    add("--historys", type=int, default=0, help="chat 模式保留的历史轮数 / past turns kept as context in chat mode")
    add("--show_speed", type=int, default=1, choices=[0, 1],
        help="1 = 每次回答后显示速度 / print [N tokens, X tokens/s] after each answer (prefill included)")
    add("--system", default=None, help="系统提示词，默认用模板自带的 / system prompt; default: the template's own")
    return p


def info(msg: str) -> None:
    """Status lines go to stderr, so `python eval_llm.py auto > answers.txt` keeps only the answers."""
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ finding the weights

def weight_candidates(save_dir, stage: str) -> list:
    """(hidden_size, use_moe) of every `{stage}_{hidden}[_moe].pth` or `.json` in save_dir, sorted."""
    pattern = re.compile(rf"^{re.escape(stage)}_(\d+)(_moe)?\.(pth|json)$")
    folder = repo_path(save_dir)
    found = set()
    if folder.is_dir():
        for f in folder.iterdir():
            m = pattern.match(f.name)
            if m:
                found.add((int(m.group(1)), int(bool(m.group(2)))))
    return sorted(found)


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
    if cfg.get("hidden_size", 512) != 512:
        cmd += f" --hidden_size {cfg['hidden_size']}"
    if cfg.get("num_hidden_layers", 8) != 8:
        cmd += f" --num_hidden_layers {cfg['num_hidden_layers']}"
    if cfg.get("use_moe"):
        cmd += " --use_moe 1"
    if str(save_dir) != "out":
        cmd += f" --save_dir {save_dir}"
    return cmd


def resolve_weight(args) -> tuple:
    """(weight path, MiniMindConfig kwargs, where the sizes came from) for the native .pth route.

    Sizes: command-line flags win, then the sidecar, then the tensor shapes of a sidecar-less file, then
    MiniMind2-Small's 512/8/dense.
    """
    hidden, moe = args.hidden_size, args.use_moe
    candidates = [c for c in weight_candidates(args.save_dir, args.weight) if moe is None or c[1] == moe]
    if hidden is None:
        if len(candidates) > 1:
            names = ", ".join(weight_stem(args.weight, h, m) + ".pth" for h, m in candidates)
            raise UserError(f"{repo_path(args.save_dir)} holds several '{args.weight}' weights ({names}); "
                            f"choose one with --hidden_size (and --use_moe)")
        hidden, moe = candidates[0] if candidates else (512, moe or 0)
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
        cfg, source = {"num_hidden_layers": 8}, "no weight file or sidecar: assuming MiniMind2-Small 512/8/dense"
    cfg.update(hidden_size=hidden, use_moe=bool(moe))
    if args.num_hidden_layers is not None:
        cfg["num_hidden_layers"] = args.num_hidden_layers
    return path, cfg, source


# ------------------------------------------------------------------------------------------------------------ loading

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
        tokenizer = load_tokenizer()
    info(f"model: {folder} (transformers folder, tokenizer from {folder if has_tokenizer else 'model/'})")
    return model, tokenizer


def load_native(args):
    path, cfg, source = resolve_weight(args)
    cfg["inference_rope_scaling"] = bool(args.inference_rope_scaling)
    model = MiniMindForCausalLM(MiniMindConfig(**cfg))
    load_weights(model, path, hint=f"train it with: {train_command(args.weight, cfg, args.save_dir)}")
    c = model.config
    info(f"model: {path} (hidden_size {c.hidden_size}, {c.num_hidden_layers} layers, "
         f"{'MoE' if c.use_moe else 'dense'}{', YaRN x16' if c.inference_rope_scaling else ''}; {source})")
    return model, load_tokenizer()


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


# -------------------------------------------------------------------------------------------------------- streaming

class IncrementalDecoder:
    """Text of a growing list of ids, released only in whole characters.

    A Chinese character is 3 UTF-8 bytes and an emoji 4, and byte-level BPE can split them across tokens; a
    partial character decodes to U+FFFD. So each step decodes the whole list and returns only the new suffix,
    holding everything back while the text ends in U+FFFD.
    """

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.emitted = tokenizer, [], ""

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self._text()
        if text.endswith("\ufffd"):
            return ""
        new, self.emitted = text[len(self.emitted):], text
        return new

    def flush(self) -> str:
        """Whatever is held back (at the end of a reply, invalid bytes are shown as U+FFFD)."""
        text = self._text()
        new, self.emitted = text[len(self.emitted):], text
        return new


class ReplyPrinter:
    """Writes one reply as its tokens arrive; the <think> part is marked [思考] (dim on a terminal), tags hidden.

    Reasoning tags are single tokens, so the reply is split into segments at their ids and each segment is decoded
    on its own; the newline that follows a tag in the reasoning format is dropped so text starts after the marker.
    """

    def __init__(self, tokenizer, out=None):
        self.tokenizer, self.out = tokenizer, out or sys.stdout
        self.tag_of = {tokenizer.convert_tokens_to_ids(t): t for t in REASONING_TAGS}
        self.tag_of.pop(tokenizer.unk_token_id, None)  # a tokenizer without the tags maps them to unk
        color = getattr(self.out, "isatty", lambda: False)()
        self.dim, self.reset = (DIM, RESET) if color else ("", "")
        self.ids, self.segment = [], IncrementalDecoder(tokenizer)
        self.thinking, self.skip_newline, self.last_char = False, False, ""

    def _write(self, s: str) -> None:
        """Reply text: the first newline after a tag is dropped."""
        if self.skip_newline and s:
            s, self.skip_newline = s[1:] if s.startswith("\n") else s, False
        self._emit(s)

    def _emit(self, s: str) -> None:
        if s:
            self.out.write(s)
            self.out.flush()
            visible = s.replace(DIM, "").replace(RESET, "")
            self.last_char = visible[-1] if visible else self.last_char

    def push(self, token_id: int) -> None:
        self.ids.append(token_id)
        tag = self.tag_of.get(token_id)
        if tag is None:
            self._write(self.segment.push(token_id))
            return
        self._write(self.segment.flush())
        self.segment = IncrementalDecoder(self.tokenizer)
        if tag == "<think>":
            self._emit(self.dim + "[思考] ")
            self.thinking = True
        elif tag == "</think>" and self.thinking:
            self._emit(self.reset + ("" if self.last_char == "\n" else "\n"))
            self.thinking = False
        elif tag == "<answer>":
            self._emit("[回答] ")
        self.skip_newline = True

    def finish(self) -> str:
        """End the line and return the whole reply text (tags kept, as the model was trained on it).

        A character cut in half by --max_new_tokens is dropped rather than shown as U+FFFD.
        """
        self._write(self.segment.flush().rstrip("\ufffd"))
        self._emit((self.reset if self.thinking else "") + ("" if self.last_char == "\n" else "\n"))
        return self.tokenizer.decode(self.ids, skip_special_tokens=True).rstrip("\ufffd")


# ------------------------------------------------------------------------------------------------------- generation

def build_prompt(tokenizer, messages: list, raw: bool) -> list:
    """Token ids for the model: ChatML with the generation prompt, or bos + text for a pretrain model."""
    if raw:
        return [tokenizer.bos_token_id] + tokenizer(messages[-1]["content"])["input_ids"]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text)["input_ids"]


def answer(engine: Engine, tokenizer, prompt_ids: list, params: SamplingParams, show_speed: bool):
    """Stream one reply to stdout; returns its text, or None when interrupted with Ctrl-C."""
    printer = ReplyPrinter(tokenizer)
    print("🤖: ", end="", flush=True)
    start = time.perf_counter()
    try:
        for step in engine.stream([prompt_ids], params):
            for _, token_id in step:
                printer.push(token_id)
    except KeyboardInterrupt:
        printer.finish()
        print("[interrupted / 已中断]", flush=True)
        return None
    seconds = time.perf_counter() - start  # the .tolist() in Engine.stream synchronises the device every step
    text = printer.finish()
    if show_speed:
        n = len(printer.ids)
        print(f"[{n} tokens, {n / seconds if seconds > 0 else 0.0:.1f} tokens/s]", flush=True)
    return text


def sampling_params(args) -> SamplingParams:
    return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                          seed=args.seed)


def run_auto(args, engine, tokenizer) -> None:
    raw = args.weight == "pretrain" and is_native(args)
    prompts = PRETRAIN_PROMPTS if raw else CHAT_PROMPTS
    system = [{"role": "system", "content": args.system}] if args.system else []
    for i, prompt in enumerate(prompts, 1):
        print(f"[{i}/{len(prompts)}] 💬: {prompt}", flush=True)
        ids = build_prompt(tokenizer, system + [{"role": "user", "content": prompt}], raw)
        if answer(engine, tokenizer, ids, sampling_params(args), bool(args.show_speed)) is None:
            return  # Ctrl-C stops the whole run
        print(flush=True)


def run_chat(args, engine, tokenizer) -> None:
    raw = args.weight == "pretrain" and is_native(args)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history = []  # user/assistant messages, the last --historys turns
    limit = engine.model.config.max_position_embeddings
    info("chat: /clear 清空历史 clears the history, /exit 或 Ctrl-D 退出 quits"
         + (" (pretrain weights: raw continuation, no history)" if raw else ""))
    for question in read_questions(history.clear):
        kept = history[-2 * args.historys:] if args.historys > 0 and not raw else []
        while True:  # drop the oldest turns while prompt + reply would not fit the position table
            ids = build_prompt(tokenizer, system + kept + [{"role": "user", "content": question}], raw)
            if len(ids) + args.max_new_tokens <= limit or not kept:
                break
            kept = kept[2:]
        if len(ids) + args.max_new_tokens > limit:
            print(f"error: prompt of {len(ids)} tokens + --max_new_tokens {args.max_new_tokens} exceeds the "
                  f"model's {limit} positions; ask something shorter", flush=True)
            continue
        reply = answer(engine, tokenizer, ids, sampling_params(args), bool(args.show_speed))
        if reply is not None and args.historys > 0:
            history[:] = (kept + [{"role": "user", "content": question},
                                  {"role": "assistant", "content": reply}])[-2 * args.historys:]
        print(flush=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # a console without UTF-8 shows '?' instead of crashing on emoji
        sys.stdout.reconfigure(errors="replace")
    with user_errors():
        if args.max_new_tokens < 1:
            raise UserError(f"--max_new_tokens {args.max_new_tokens}: must be at least 1")
        if args.historys < 0:
            raise UserError(f"--historys {args.historys}: must be 0 or more")
        model, tokenizer = load_model(args)
        engine = Engine(model, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id or 0)
        try:
            (run_chat if args.mode == "chat" else run_auto)(args, engine, tokenizer)
        except BrokenPipeError:  # `python eval_llm.py | head`: the reader left; silence the final flush too
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while loading: no traceback
        print(file=sys.stderr)
        sys.exit(130)
