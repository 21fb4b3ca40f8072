"""What scripts/web_demo.py does besides drawing: list and load local models, stream replies from the shared Engine
or an OpenAI-compatible server, and decide whether a visitor may use the page at all (`visitor_gate`)."""
import argparse
from pathlib import Path

from streamlit import config as st_config

from model.chat_protocol import IncrementalDecoder, trained_context_len
from model.checkpoint import WEIGHT_NAME, load_model
from model.engine import Engine, SamplingParams

LOOPBACK = {None, "", "127.0.0.1", "::1", "localhost"}


def local_models(folder: Path) -> list:
    """Labels of what can be loaded from `folder`: native .pth files, then transformers folders (with a '/')."""
    if not folder.is_dir():
        return []
    native = sorted(f.name for f in folder.glob("*.pth") if WEIGHT_NAME.match(f.name))
    hf = sorted(d.name + "/" for d in folder.iterdir() if d.is_dir() and (d / "config.json").is_file())
    return native + hf


def lora_adapters(folder: Path) -> list:
    lora = folder / "lora"
    return sorted(d.name for d in lora.iterdir() if d.is_dir()) if lora.is_dir() else []


def load_args(folder: Path, label: str, lora: str, tokenizer_path=None) -> argparse.Namespace:
    """The arguments model.checkpoint.load_model takes, for one dropdown entry."""
    args = argparse.Namespace(save_dir=str(folder), weight="full_sft", load_from=None, trust_remote_code=0,
                              lora_weight=str(folder / "lora" / lora) if lora else None, hidden_size=None,
                              num_hidden_layers=None, use_moe=None, inference_rope_scaling=0, device=None,
                              tokenizer_path=tokenizer_path)
    m = WEIGHT_NAME.match(label)
    if label.endswith("/"):
        args.load_from = str(folder / label.rstrip("/"))
    elif m:
        args.weight, args.hidden_size, args.use_moe = m["stage"], int(m["hidden"]), int(bool(m["moe"]))
    return args


def load_engine(folder: Path, label: str, lora: str, tokenizer_path=None):
    """(Engine, tokenizer) for a dropdown entry."""
    model, tokenizer = load_model(load_args(folder, label, lora, tokenizer_path))
    return Engine(model, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id or 0), tokenizer


def stream_local(engine, tokenizer, messages: list, settings: dict):
    """("content", text) pieces of the reply, in whole characters, from the shared Engine; the oldest turns are
    dropped while prompt + reply would not fit the positions the model was trained on."""
    limit = trained_context_len(engine.model.config)
    history, question = messages[:-1], messages[-1:]
    while True:
        text = tokenizer.apply_chat_template(history + question, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text)["input_ids"]
        if len(ids) + settings["max_tokens"] <= limit or not history:
            break
        history = history[2:]
    if len(ids) + settings["max_tokens"] > limit:
        raise ValueError(f"the message takes {len(ids)} tokens; with max tokens {settings['max_tokens']} that "
                         f"exceeds the model's {limit} positions. Write less or lower max tokens.")
    params = SamplingParams(max_new_tokens=settings["max_tokens"], temperature=settings["temperature"],
                            top_p=settings["top_p"])
    decoder = IncrementalDecoder(tokenizer)
    for step in engine.stream([ids], params):
        for _, token_id in step:
            yield "content", decoder.push(token_id)
    yield "content", decoder.flush().rstrip("\ufffd")


def stream_api(settings: dict, messages: list):
    """("reasoning" | "content", text) pieces from an OpenAI-compatible server."""
    import openai  # only API mode needs it (0.4 s to import)
    client = openai.OpenAI(base_url=settings["base_url"], api_key=settings["api_key"] or "none", max_retries=0)
    model = settings["model"] or client.models.list().data[0].id
    stream = client.chat.completions.create(model=model, messages=messages, temperature=settings["temperature"],
                                            top_p=settings["top_p"], max_tokens=settings["max_tokens"], stream=True)
    for chunk in stream:
        for choice in chunk.choices:
            reasoning = getattr(choice.delta, "reasoning_content", None)
            if reasoning:
                yield "reasoning", reasoning
            if choice.delta.content:
                yield "content", choice.delta.content


def api_error_text(e: Exception) -> str:
    """The server's own message for API errors (openai puts the "error" object in e.body), else the exception."""
    body = getattr(e, "body", None)
    err = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return f"{getattr(e, 'status_code', '')} {err['message']}".strip()
    return f"{type(e).__name__}: {e}"


# ------------------------------------------------------------------------------------------------ who may use it

RESTART = ("streamlit run scripts/web_demo.py --server.address 127.0.0.1 (or start it from the repository root, "
           "whose .streamlit/config.toml sets that); to open it to a network on purpose, pass --server.address "
           "0.0.0.0")


def configured_address():
    """(server.address, where it was set): Streamlit reads .streamlit/config.toml from the working folder only, so
    started from elsewhere the address is unset ('<default>') and the server listens on every interface."""
    return st_config.get_option("server.address"), st_config.get_where_defined("server.address")


def visitor_gate(client_ip) -> tuple:
    """("ok" | "warn" | "refuse", message) for a visitor from `client_ip` (None = this machine, as Streamlit
    reports loopback). Listening everywhere by accident (no address configured) serves this machine with a warning
    and refuses everyone else, so the 127.0.0.1 rule holds whichever folder the demo was started from; an address
    someone chose (0.0.0.0 included) is respected."""
    address, source = configured_address()
    if address or source != "<default>":
        return "ok", ""
    if client_ip in LOOPBACK:
        return "warn", ("这个 demo 在所有网卡上监听（不是从仓库根目录启动的），其他机器的访问会被拒绝。/ This demo "
                        f"listens on every interface (not started from the repository root); visitors from other "
                        f"machines are refused. Restart with: {RESTART}")
    return "refuse", ("此 demo 仅限本机访问 / this demo only serves the machine it runs on. Whoever started it can "
                      f"open it to a network with: {RESTART}")
