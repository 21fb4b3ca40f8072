"""Chat with MiniMind in the browser: local weights from out/ or any OpenAI-compatible API.

    streamlit run scripts/web_demo.py                                   # then open http://localhost:8501
    streamlit run scripts/web_demo.py -- --weights_dir out/demo --api_base_url http://127.0.0.1:8998/v1

Safe by default: only this machine is served unless whoever starts it chose an address (see docs/security_en.md);
visitors pick weights only among the --weights_dir folders (default: out/ and its subfolders with weights), never a
path they type; API mode talks only to --api_base_url. The sidebar picks a native `out/{stage}_{hidden}[_moe].pth`
or a transformers folder (optionally with a LoRA adapter from out/lora/), decoded here by the shared Engine, or an
OpenAI-compatible server (scripts/serve_openai_api.py, vLLM). Answers stream in; a reasoning model's <think> part is
shown collapsed above the answer; Markdown is rendered with HTML escaped, so nothing typed is interpreted as HTML.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import sys
from pathlib import Path

import streamlit as st

from model.chat_protocol import ReplyParser
from scripts.webchat.backend import (  # noqa: F401 - local_models, lora_adapters, load_args: used by tests too
    api_error_text,
    load_args,
    load_engine,
    local_models,
    lora_adapters,
    stream_api,
    stream_local,
    visitor_gate,
)

ROOT = Path(__file__).resolve().parents[1]
LOCAL, API = "本地权重 / local weights", "OpenAI 兼容 API / API"
THINK_LABEL = "💭 思考过程 / reasoning"


def demo_options(argv=None) -> argparse.Namespace:
    """What the person starting the demo decides (after `--` on the streamlit command line), not its visitors."""
    p = argparse.ArgumentParser(prog="streamlit run scripts/web_demo.py --",
                                description="MiniMind 网页 demo / web demo")
    p.add_argument("--weights_dir", action="append", default=None,
                   help="可选的权重目录，可重复 / a folder visitors may load weights from (repeatable); "
                        "default: out/ and its subfolders that hold weights")
    p.add_argument("--tokenizer_path", default=None,
                   help="分词器目录；默认用权重 .json 记录的那个 / tokenizer folder; default: the weights' recorded one")
    p.add_argument("--api_base_url", default="http://127.0.0.1:8998/v1",
                   help="API 模式连接的 OpenAI 兼容服务 / the OpenAI-compatible server API mode talks to")
    args, _ = p.parse_known_args(sys.argv[1:] if argv is None else argv)  # AppTest runs under pytest's argv
    return args


def allowed_folders(given) -> list:
    """Absolute weight folders a visitor can choose from."""
    if given:
        return [Path(g) if Path(g).is_absolute() else ROOT / g for g in given]
    out = ROOT / "out"
    subs = sorted(d for d in out.iterdir() if d.is_dir() and d.name != "lora" and local_models(d)) \
        if out.is_dir() else []
    return [out, *subs]


def folder_label(folder: Path) -> str:
    try:
        return str(folder.relative_to(ROOT))
    except ValueError:
        return str(folder)


@st.cache_resource(show_spinner="加载模型 / loading the model…", max_entries=2)
def load_local(folder: str, label: str, lora: str):
    """(Engine, tokenizer) for a dropdown entry; cached across reruns and sessions."""
    return load_engine(Path(folder), label, lora, OPTIONS.tokenizer_path)


# -------------------------------------------------------------------------------------------------------------- UI

def sidebar() -> dict:
    s = {}
    with st.sidebar:
        st.title("MiniMind")
        s["source"] = st.radio("模型来源 / model source", [LOCAL, API], key="source")
        if s["source"] == LOCAL:
            folders = allowed_folders(OPTIONS.weights_dir)
            labels = [folder_label(f) for f in folders]
            s["folder"] = st.selectbox("权重目录 / weights folder", labels, key="folder",
                                       help="启动时用 --weights_dir 指定 / set with --weights_dir when starting")
            folder = folders[labels.index(s["folder"])]
            s["folder_path"] = folder
            options = local_models(folder)
            # keyed by folder: another folder is a fresh dropdown with its first entry selected
            s["label"] = st.selectbox("权重 / weights", options, key=f"label:{folder}",
                                      help="out/{stage}_{hidden}.pth 或 transformers 目录 / or a transformers folder")
            adapters = lora_adapters(folder)
            s["lora"] = st.selectbox("LoRA", ["none"] + adapters, key=f"lora:{folder}") if adapters else "none"
        else:
            s["base_url"] = OPTIONS.api_base_url  # fixed by --api_base_url: visitors cannot point it elsewhere
            st.caption(f"base_url: {OPTIONS.api_base_url}（启动时用 --api_base_url 设置 / set with --api_base_url）")
            s["model"] = st.text_input("model（空 = 服务端第一个 / empty = the server's first）", "", key="model")
            s["api_key"] = st.text_input("api_key", "", type="password", key="api_key")
        s["historys"] = st.slider("历史轮数 / history turns", 0, 10, 2, key="historys")
        s["temperature"] = st.slider("temperature", 0.0, 1.5, 0.85, 0.05, key="temperature")
        s["top_p"] = st.slider("top_p", 0.05, 1.0, 0.85, 0.05, key="top_p")
        s["max_tokens"] = st.slider("max tokens", 16, 2048, 512, 16, key="max_tokens")
        if st.button("清空对话 / clear chat", key="clear"):
            st.session_state.messages = []
    return s


def show_reply(reasoning: str, content: str) -> None:
    if reasoning:
        with st.expander(THINK_LABEL, expanded=False):
            st.markdown(reasoning)
    st.markdown(content)


def show_history(messages: list) -> None:
    for i, m in enumerate(messages):
        with st.chat_message(m["role"]):
            if m["role"] == "user":
                st.markdown(m["content"])
                continue
            show_reply(m.get("reasoning", ""), m["content"])
            if st.button("🗑", key=f"delete_{i}", help="删除这一轮 / delete this turn"):
                del messages[max(0, i - 1):i + 1]  # the question and its answer
                st.rerun()


def answer(settings: dict, messages: list) -> None:
    """Stream the reply to the last user message into the page and append it to the history."""
    context = [{"role": m["role"], "content": m["content"]} for m in messages]
    keep = 2 * settings["historys"]
    context = (context[:-1][-keep:] if keep else []) + context[-1:]
    with st.chat_message("assistant"):
        think_slot, answer_slot = st.empty(), st.empty()
        parser, reasoning, content = ReplyParser(parse_tools=False), "", ""
        try:
            if settings["source"] == LOCAL:
                if not settings["label"]:
                    raise ValueError(f"no weights in {settings['folder_path']}: train a model first "
                                     f"(e.g. python trainer/train_full_sft.py) or pick another folder")
                engine, tokenizer = load_local(str(settings["folder_path"]), settings["label"],
                                               "" if settings["lora"] == "none" else settings["lora"])
                pieces = stream_local(engine, tokenizer, context, settings)
            else:
                pieces = stream_api(settings, context)
            for kind, text in pieces:
                events = [(kind, text)] if kind == "reasoning" else parser.feed(text)
                for ev_kind, ev_text in events:
                    if ev_kind == "reasoning":
                        reasoning += ev_text
                    else:
                        content += ev_text
                if reasoning:
                    with think_slot.container():
                        with st.expander(THINK_LABEL, expanded=True):
                            st.markdown(reasoning)
                answer_slot.markdown(content)
            for ev_kind, ev_text in parser.finish():
                if ev_kind == "reasoning":
                    reasoning += ev_text
                else:
                    content += ev_text
        except Exception as e:  # noqa: BLE001 - shown to the user; the question is taken back so it can be resent
            messages.pop()
            st.error(f"生成失败 / generation failed: {api_error_text(e)}")
            return
    messages.append({"role": "assistant", "content": content, "reasoning": reasoning})
    st.rerun()


def main() -> None:
    st.set_page_config(page_title="MiniMind", page_icon="🤖")
    verdict, message = visitor_gate(st.context.ip_address)
    if verdict == "refuse":
        st.error(message)
        st.stop()
    if verdict == "warn":
        st.warning(message)
    if "messages" not in st.session_state:
        st.session_state.messages = []
    settings = sidebar()
    messages = st.session_state.messages
    show_history(messages)
    question = st.chat_input("输入消息 / message")
    if question:
        messages.append({"role": "user", "content": question})
        with st.chat_message("user"):
            st.markdown(question)
        answer(settings, messages)


OPTIONS = demo_options()

if __name__ == "__main__":  # `streamlit run` (and AppTest) run the file as __main__; tests import the helpers
    main()
