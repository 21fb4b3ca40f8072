"""Talk to a trained MiniMind: a fixed prompt set (`auto`) or an interactive chat (`chat`).

    python eval_llm.py                                   # auto: 8 fixed prompts, out/full_sft_*.pth
    python eval_llm.py chat --weight reason --historys 2 # chat with the reasoning model, 2 turns of memory
    python eval_llm.py auto --weight pretrain            # raw text continuation, no chat template
    python eval_llm.py chat --lora_weight lora_identity  # full_sft + out/lora/lora_identity_{hidden}/ merged in
    python eval_llm.py auto --load_from ./MiniMind2      # a transformers folder instead of a .pth

The fixed prompts and the prompt format are model/chat_protocol.py's (shared with scripts/eval_bench.py).

Sizes come from the weight file's .json sidecar, so `--hidden_size` is only needed when `--save_dir` holds
several sizes of one stage. All decoding goes through the shared `model.engine.Engine`.
"""
import argparse
import os
import sys
import time

from model.chat_protocol import CHAT_PROMPTS, PRETRAIN_PROMPTS, IncrementalDecoder, build_prompt, read_questions
from model.checkpoint import add_model_args, info, is_native, load_model
from model.engine import Engine, SamplingParams
from model.runtime import UserError, user_errors

REASONING_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
DIM, RESET = "\033[2m", "\033[0m"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="MiniMind 模型评测与对话 / evaluate and chat with a MiniMind model",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("mode", nargs="?", default="auto", choices=["auto", "chat"],
        help="auto = 回答一组固定问题后退出 / answer a fixed prompt set and exit; chat = 交互对话 / interactive chat")
    add_model_args(p)
    add = p.add_argument_group("generation / 生成").add_argument
    add("--temperature", type=float, default=0.85, help="采样温度，0 = 贪心 / sampling temperature, 0 = greedy")
    add("--top_p", type=float, default=0.85, help="nucleus 采样阈值 / nucleus sampling mass")
    add("--max_new_tokens", type=int, default=512, help="每次回答的最大新 token 数 / max tokens per answer")
    add("--seed", type=int, default=None, help="随机种子（每个回答相同）/ sampling seed for every answer; default random")
    add("--historys", type=int, default=0, help="chat 模式保留的历史轮数 / past turns kept as context in chat mode")
    add("--show_speed", type=int, default=1, choices=[0, 1],
        help="1 = 每次回答后显示速度 / print [N tokens, X tokens/s] after each answer (prefill included)")
    add("--system", default=None, help="系统提示词，默认用模板自带的 / system prompt; default: the template's own")
    return p


# -------------------------------------------------------------------------------------------------------- streaming


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
