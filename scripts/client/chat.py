"""Terminal chat with any OpenAI-compatible server through the official `openai` client
(scripts/chat_openai_api.py is the command).

Reasoning (`reasoning_content`, or raw <think> tags from a server without a reasoning parser) is printed as
[思考] before the answer. When the model calls a tool, the call is printed and the user types the tool's result
(an empty line skips it); the result goes back to the model, which then answers. Only `openai` and
model/chat_protocol.py are imported (no torch), so the client runs on a machine that merely talks to a server.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import openai

from model.chat_protocol import ReplyParser, read_questions

DIM, RESET = "\033[2m", "\033[0m"


class ClientError(Exception):
    """A problem the user can fix (server unreachable, bad flag, bad --tools file): one message, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="通过 OpenAI 兼容 API 对话 / chat through an OpenAI-compatible API",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("--base_url", default="http://127.0.0.1:8998/v1", help="API 地址 / server URL including /v1")
    add("--model", default=None, help="模型名，默认取服务端第一个 / model id; default: the first one the server lists")
    add("--api_key", default=os.environ.get("OPENAI_API_KEY") or "none",
        help="API key (默认读 OPENAI_API_KEY / default: $OPENAI_API_KEY)")
    add("--historys", type=int, default=0, help="保留的历史轮数 / past turns sent as context")
    add("--stream", type=int, default=1, choices=[0, 1], help="1 = 流式输出 / print the answer as it is generated")
    add("--temperature", type=float, default=0.85, help="采样温度，0 = 贪心 / sampling temperature, 0 = greedy")
    add("--top_p", type=float, default=0.85, help="nucleus 采样阈值 / nucleus sampling mass")
    add("--max_tokens", type=int, default=512, help="每次回答的最大 token 数 / max tokens per answer")
    add("--seed", type=int, default=None, help="采样种子 / sampling seed")
    add("--system", default=None, help="系统提示词 / system prompt")
    add("--tools", default=None,
        help="工具定义 JSON 文件：OpenAI tools 列表 / JSON file with a list of OpenAI tool definitions")
    return p


def load_tools(path: str) -> list:
    file = Path(path).expanduser()
    try:
        tools = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClientError(f"--tools {path}: no such file {file}") from None
    except json.JSONDecodeError as e:
        raise ClientError(f"--tools {file}: not valid JSON ({e})") from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise ClientError(f"--tools {file}: expected a JSON list of tool objects")
    # a bare function schema {"name", "parameters"} (MiniMind's "functions") is wrapped as OpenAI expects
    return [t if t.get("type") == "function" else {"type": "function", "function": t} for t in tools]


class ReplyView:
    """Prints one reply as it arrives: reasoning dimmed after [思考], then the answer; returns its parts."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        color = getattr(self.out, "isatty", lambda: False)()
        self.dim, self.reset = (DIM, RESET) if color else ("", "")
        self.parser = ReplyParser(parse_tools=False)  # raw <think> tags from servers that do not split them
        self.reasoning, self.content, self.section = [], [], None

    def _write(self, section: str, text: str) -> None:
        if not text:
            return
        if section != self.section:
            if self.section == "reasoning":
                self.out.write(self.reset + "\n")
            if section == "reasoning":
                self.out.write(self.dim + "[思考] ")
            self.section = section
        self.out.write(text)
        self.out.flush()
        (self.reasoning if section == "reasoning" else self.content).append(text)

    def reasoning_delta(self, text: str) -> None:
        self._write("reasoning", text)

    def content_delta(self, text: str) -> None:
        for ev in self.parser.feed(text):
            self._write(ev[0], ev[1])

    def finish(self) -> tuple:
        for ev in self.parser.finish():
            self._write(ev[0], ev[1])
        if self.section == "reasoning":
            self.out.write(self.reset)
        self.out.write("\n")
        self.out.flush()
        return "".join(self.reasoning), "".join(self.content)


def request_reply(client, args, messages: list, tools) -> tuple:
    """One completion, shown as it arrives; returns (content, [tool calls as dicts])."""
    kw = dict(model=args.model, messages=messages, temperature=args.temperature, top_p=args.top_p,
              max_tokens=args.max_tokens)
    if args.seed is not None:
        kw["seed"] = args.seed
    if tools:
        kw["tools"] = tools
    view = ReplyView()
    print("🤖: ", end="", flush=True)
    calls = {}
    if args.stream:
        for chunk in client.chat.completions.create(stream=True, **kw):
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            view.reasoning_delta(getattr(delta, "reasoning_content", None) or "")
            view.content_delta(delta.content or "")
            for tc in delta.tool_calls or []:  # pieces of each call arrive under its index
                call = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = tc.id or call["id"]
                if tc.function is not None:
                    call["name"] += tc.function.name or ""
                    call["arguments"] += tc.function.arguments or ""
    else:
        message = client.chat.completions.create(**kw).choices[0].message
        view.reasoning_delta(getattr(message, "reasoning_content", None) or "")
        view.content_delta(message.content or "")
        for i, tc in enumerate(message.tool_calls or []):
            calls[i] = {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
    _, content = view.finish()
    tool_calls = [calls[i] for i in sorted(calls)]
    for call in tool_calls:
        print(f"🔧 调用 / call: {call['name']}({call['arguments']})", flush=True)
    return content, tool_calls


def ask_tool_results(tool_calls: list, echo: bool) -> list:
    """The user types each call's result; None when any is skipped (the call is then dropped from history)."""
    results = []
    for call in tool_calls:
        try:
            line = input(f"🔧 {call['name']} 的结果 / result (回车跳过 / Enter skips): ")
        except EOFError:
            return None
        if echo:
            print(line, flush=True)
        if not line.strip():
            return None
        results.append({"role": "tool", "tool_call_id": call["id"], "content": line.strip()})
    return results


def chat(client, args, tools) -> None:
    system = [{"role": "system", "content": args.system}] if args.system else []
    history = []  # whole turns: user message, assistant (tool calls, tool results), final assistant message
    echo = not sys.stdin.isatty()  # piped input is not shown by the terminal, so show it
    print(f"chat with {args.model} at {args.base_url}: /clear 清空历史 clears the history, /exit 或 Ctrl-D 退出 quits",
          file=sys.stderr, flush=True)
    for question in read_questions(history.clear):
        turn = [{"role": "user", "content": question}]
        try:
            while True:
                content, tool_calls = request_reply(client, args, system + flatten(history) + turn, tools)
                if not tool_calls:
                    turn.append({"role": "assistant", "content": content})
                    break
                results = ask_tool_results(tool_calls, echo)
                if results is None:
                    turn = None  # an unanswered call cannot be sent back to the model: forget this turn
                    break
                turn.append({"role": "assistant", "content": content or None, "tool_calls": [
                    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in tool_calls]})
                turn += results
        except openai.APIConnectionError as e:
            print(f"\nerror: cannot reach {args.base_url}: {e}", flush=True)
            continue
        except openai.APIStatusError as e:
            print(f"\nerror {e.status_code}: {api_error_message(e)}", flush=True)
            continue
        if turn is not None and args.historys > 0:
            history[:] = (history + [turn])[-args.historys:]  # in place: /clear empties this list
        print(flush=True)


def flatten(history_turns: list) -> list:
    return [m for turn in history_turns for m in turn]


def api_error_message(e) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return err["message"]
    return str(e)


def run(args) -> int:
    """Check the flags, reach the server, pick the model, chat; a ClientError is one line and exit code 2."""
    try:
        if args.historys < 0:
            raise ClientError(f"--historys {args.historys}: must be 0 or more")
        if args.max_tokens < 1:
            raise ClientError(f"--max_tokens {args.max_tokens}: must be at least 1")
        tools = load_tools(args.tools) if args.tools else None
        client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0)
        try:
            served = [m.id for m in client.models.list()]
        except openai.APIConnectionError:
            raise ClientError(f"cannot reach {args.base_url}; start a server first, e.g. "
                            f"python scripts/serve_openai_api.py (or pass --base_url)") from None
        except openai.APIStatusError as e:
            raise ClientError(f"{args.base_url}/models answered {e.status_code}: {api_error_message(e)}") from None
        if args.model is None:
            if not served:
                raise ClientError(f"{args.base_url} serves no models; pass --model")
            args.model = served[0]
        chat(client, args, tools)
    except ClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
