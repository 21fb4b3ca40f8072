"""What the demo trained, whether it learned, where the files are and what to run next.

    python scripts/demo_report.py                       # after bash scripts/demo.sh (reads out/demo/)
    python scripts/demo_report.py --save_dir out --weights pretrain full_sft

Learning is measured as held-out bits per character on dataset/demo/eval_heldout.jsonl (texts no training file
contains), per domain: the negative log-likelihood of each text in bits divided by its character count, so the
number does not depend on the tokenizer. An untrained model of the same size is the "before" column (about
log2(6400) = 12.6 bits per token spread over the text's characters). The report is printed and also written to
{save_dir}/report.md.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402

from model.checkpoint import (atomic_write_text, load_tokenizer, load_weights, resolve_weight,  # noqa: E402
                              weights_tokenizer)
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM, count_parameters  # noqa: E402
from model.runtime import UserError, display_path, repo_path, user_errors  # noqa: E402

HELDOUT = "dataset/demo/eval_heldout.jsonl"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="演示总结：留出集 bits/字、文件与下一步命令 / demo summary: held-out "
                                            "bits per character, files and next commands",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--save_dir", default="out/demo", help="权重目录 / folder with the demo's weights")
    p.add_argument("--weights", nargs="+", default=["pretrain", "full_sft"], help="要评测的阶段 / stages to score")
    p.add_argument("--data_path", default=HELDOUT, help="留出集 / held-out JSONL with 'text' and 'domain'")
    p.add_argument("--max_chars", type=int, default=200, help="每条文本最多评测的字符数 / characters scored per text")
    p.add_argument("--seconds", type=float, default=None, help="演示用时（秒），写进报告 / demo wall time to report")
    return p


def read_heldout(path: Path, max_chars: int) -> list:
    """[(domain, text)] with each text cut to max_chars characters."""
    if not path.is_file():
        raise UserError(f"held-out file not found: {path} (it ships with the repository in dataset/demo/)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((str(row.get("domain", "all")), row["text"][:max_chars]))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(f"{path}:{n}: expected a JSON object with a 'text' field ({e})") from None
    return [(d, t) for d, t in rows if t]


@torch.inference_mode()
def bits_per_char(model, tokenizer, texts: list, batch_size: int = 16) -> dict:
    """{domain: bits/char} plus 'all': summed NLL (bos + text, every text token predicted) over summed chars."""
    nll, chars = defaultdict(float), defaultdict(int)
    encoded = [(d, [tokenizer.bos_token_id] + tokenizer(t)["input_ids"], len(t)) for d, t in texts]
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i:i + batch_size]
        longest = max(len(ids) for _, ids, _ in chunk)
        ids = torch.full((len(chunk), longest), tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, (_, row, _) in enumerate(chunk):  # right padding: positions stay 0..n-1 for every row
            ids[r, :len(row)] = torch.tensor(row)
            mask[r, :len(row)] = 1
        logp = model.token_logprobs(ids, attention_mask=mask) * mask[:, 1:]
        for r, (domain, _, n_chars) in enumerate(chunk):
            for key in (domain, "all"):
                nll[key] -= float(logp[r].sum())
                chars[key] += n_chars
    return {k: nll[k] / math.log(2) / chars[k] for k in nll}


def load_stage(save_dir: str, stage: str):
    """(path, fp32 eval model) of {save_dir}/{stage}_*.pth, sizes from its sidecar."""
    args = argparse.Namespace(save_dir=save_dir, weight=stage, hidden_size=None, num_hidden_layers=None,
                              use_moe=None)
    path, cfg, _ = resolve_weight(args)
    model = MiniMindForCausalLM(MiniMindConfig(**cfg))
    load_weights(model, path, hint=f"run the demo first: bash scripts/demo.sh (it writes {save_dir}/)")
    return path, cfg, model.eval()


def next_commands(save_dir: str) -> list:
    """Commands that work on this folder's weights as they are (sizes come from the sidecars)."""
    d = save_dir
    return [
        ("对话 / chat", f"python eval_llm.py chat --save_dir {d}"),
        ("固定问题 / fixed prompts", f"python eval_llm.py auto --save_dir {d} --weight pretrain"),
        ("API 服务 / OpenAI-compatible server", f"python scripts/serve_openai_api.py --save_dir {d}"),
        ("终端客户端 / client (2nd terminal)", "python scripts/chat_openai_api.py --tools scripts/tools_example.json"),
        ("网页 demo / web demo", f"streamlit run scripts/web_demo.py -- --weights_dir {d}"),
        ("转 HF（Llama）/ to transformers", f"python scripts/convert_to_hf.py --save_dir {d} "
                                           f"--output_dir {d}/minimind-hf"),
        ("继续 DPO / go on with DPO", f"python trainer/train_dpo.py --save_dir {d} --checkpoint_dir checkpoints/demo "
                                     f"--hidden_size {{h}} --num_hidden_layers {{l}} --max_steps 20"),
    ]


def human_size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def render(rows: dict, before: dict, stages: list, files: list, cfg: dict, save_dir: str, seconds) -> str:
    domains = sorted(k for k in before if k != "all") + ["all"]
    took = f"，用时 {seconds / 60:.1f} 分钟 / took {seconds / 60:.1f} min" if seconds else ""
    lines = [f"# 演示结果 / Demo report{took}", "",
             f"模型 / model: hidden_size {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers, "
             f"{cfg['params'] / 1e6:.2f}M parameters", "",
             "## 留出集 bits/字（越低越好）/ held-out bits per character (lower is better)", "",
             "| domain | untrained | " + " | ".join(stages) + " |",
             "|---|---|" + "---|" * len(stages)]
    for d in domains:
        lines.append(f"| {d} | {before[d]:.2f} | " + " | ".join(f"{rows[s][d]:.2f}" for s in stages) + " |")
    last = stages[-1]
    lines += ["", f"{last}: {before['all']:.2f} -> {rows[last]['all']:.2f} bits/char "
                  f"({'learned / 学到了' if rows[last]['all'] < before['all'] - 0.5 else 'NOT learned / 没学到'})",
              "", "## 文件 / files", ""]
    lines += [f"- `{display_path(f)}` ({human_size(f.stat().st_size)})" for f in files]
    lines += ["", "## 下一步 / next commands", ""]
    for what, cmd in next_commands(save_dir):
        lines.append(f"- {what}: `{cmd.format(h=cfg['hidden_size'], l=cfg['num_hidden_layers'])}`")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors():
        torch.manual_seed(0)
        texts = read_heldout(repo_path(args.data_path), args.max_chars)
        rows, files, cfg = {}, [], None
        for stage in args.weights:
            path, cfg, model = load_stage(args.save_dir, stage)
            tokenizer = load_tokenizer(weights_tokenizer(path))
            rows[stage] = bits_per_char(model, tokenizer, texts)
            files += [path, path.with_suffix(".json")]
        untrained = MiniMindForCausalLM(MiniMindConfig(**cfg)).eval()
        before = bits_per_char(untrained, tokenizer, texts)
        cfg = dict(cfg, params=count_parameters(untrained))
        report = render(rows, before, args.weights, files, cfg, args.save_dir, args.seconds)
        atomic_write_text(report, repo_path(args.save_dir) / "report.md")
        print(report, end="")
        print(f"(写入 / written to {display_path(repo_path(args.save_dir) / 'report.md')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
