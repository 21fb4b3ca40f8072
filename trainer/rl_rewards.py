"""Rewards for the RL stages: a rule reward against reference answers, a Hugging Face reward model, a user's
function, and the reasoning-format bonus; `RewardSet` sums the chosen parts and clips to [-REWARD_CLIP, REWARD_CLIP].

    --reward rule|model|none      --reward_model_path DIR [--trust_remote_code 1]      --reward_fn module:function
"""
import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Callable

import torch

from model.runtime import UserError, repo_path

# Rewards are clipped to [-3, 3] (MiniMind's scale for internlm2-1_8b-reward scores); SPO's tracker maps this
# range onto [0, 1].
REWARD_CLIP = 3.0
FORMAT_PATTERN = re.compile(r"^<think>\n.*?\n</think>\n\n?<answer>\n.*?\n</answer>$", re.S)
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
EDGE_PUNCTUATION = " \t\r\n。.，,！!？?；;：:、\"'“”‘’「」《》()（）"


def format_reward(responses: list, **_) -> list:
    """Reasoning format bonus in [0, 1]: 0.5 for the whole template, 0.125 per tag that appears exactly once."""
    tags = ("<think>", "</think>", "<answer>", "</answer>")
    return [0.5 * bool(FORMAT_PATTERN.match(r.strip())) + 0.125 * sum(r.count(t) == 1 for t in tags)
            for r in responses]


def final_answer(response: str, reasoning: bool) -> str:
    """The part of a response that is checked: the <answer> content in reasoning mode (else what follows
    </think>), the whole response otherwise."""
    if reasoning:
        tagged = ANSWER_TAG.search(response)
        if tagged:
            return tagged.group(1)
        return response.split("</think>")[-1]
    return response


def is_correct(response: str, answer: str, answer_type: str) -> bool:
    """Checkable answers of the bundled prompts (dataset/demo/rlaif_demo.jsonl: 850 exact, 400 choice, 250 number).

    choice: the standalone capital letters in the response must be exactly the reference letter ("C", "选C。");
    number: every number in it must equal the reference ("8", "8画"; not "8 或 10");
    exact (and any other type): equal after trimming spaces and punctuation at both ends.
    """
    if answer_type == "choice":
        letters = set(re.findall(r"(?<![A-Za-z])[A-Z](?![A-Za-z])", response))
        return letters == {answer.strip().upper()}
    if answer_type == "number":
        numbers = re.findall(r"-?\d+(?:\.\d+)?", response)
        try:
            target = float(answer)
        except ValueError:
            return False
        return bool(numbers) and all(float(x) == target for x in numbers)
    return response.strip(EDGE_PUNCTUATION) == answer.strip(EDGE_PUNCTUATION)


class RuleReward:
    """1.0 when the response's answer matches the reference answer of the prompt, else 0.0 (works offline)."""

    def __init__(self, args, ctx, log):
        self.reasoning = bool(args.reasoning)
        self.data_path = args.data_path

    def __call__(self, responses, answers, answer_types, **_) -> list:
        if not all(a.strip() for a in answers):
            raise UserError(f"--reward rule needs a reference answer (a last assistant message) for every prompt, "
                            f"and {self.data_path} has prompts without one (MiniMind's rlaif-mini.jsonl has none); "
                            f"use --reward model --reward_model_path FOLDER or --reward_fn module:function")
        return [float(is_correct(final_answer(r, self.reasoning), a, t))
                for r, a, t in zip(responses, answers, answer_types)]


CHATML_TURN = re.compile(r"<\|im_start\|>(system|user|assistant|tool)\n(.*?)<\|im_end\|>", re.S)


def chatml_messages(prompt: str) -> list:
    """The messages of a rendered ChatML prompt, to re-render them with the reward model's own template."""
    return [{"role": role, "content": content} for role, content in CHATML_TURN.findall(prompt)]


class ModelReward:
    """Scores from a local Hugging Face reward model, batched, clipped to [-3, 3].

    Sequence-classification models with one output (`*ForSequenceClassification`, num_labels=1) run through
    transformers; models that ship their own scoring code (internlm2-1_8b-reward: `AutoModel` + `get_scores`)
    need --trust_remote_code 1. In reasoning mode the score is 0.4 x (whole response) + 0.6 x (<answer> part),
    as in MiniMind.
    """
    chunk = 16  # texts per reward-model forward

    def __init__(self, args, ctx, log):
        path = repo_path(args.reward_model_path)
        self.device, self.reasoning = ctx.device, bool(args.reasoning)
        config = self._read_config(path, bool(args.trust_remote_code))
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
        dtype = torch.float32 if ctx.device.type == "cpu" else ctx.dtype
        archs = config.get("architectures") or []
        remote = config.get("auto_map", {})
        kwargs = dict(trust_remote_code=bool(args.trust_remote_code), dtype=dtype)
        if any(a.endswith("ForSequenceClassification") for a in archs) or \
                "AutoModelForSequenceClassification" in remote:
            model, info = AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True,
                                                                             **kwargs)
            head = [k for k in info["missing_keys"] if "score" in k or "classifier" in k]
            if head:
                raise UserError(f"{path}: the reward head {head[:2]} is not in the weight files; the folder holds "
                                f"an untrained classifier, not a reward model")
            if model.config.num_labels != 1:
                raise UserError(f"{path}: the model gives {model.config.num_labels} scores per text "
                                f"(num_labels={model.config.num_labels}); a reward model gives one (num_labels=1)")
            self.scorer = "classifier"
        elif "AutoModel" in remote:  # its own class and scoring code (internlm2-1_8b-reward)
            model = AutoModel.from_pretrained(path, **kwargs)
            if not hasattr(model, "get_scores"):
                raise UserError(f"{path}: {type(model).__name__} has no get_scores(tokenizer, chats) method")
            self.scorer = "get_scores"
        else:
            raise UserError(f"{path} holds a {'/'.join(archs) or 'model without architectures'}, which has no "
                            f"reward head; --reward model needs a sequence-classification reward model (one "
                            f"score per text, num_labels=1), e.g. internlm2-1_8b-reward")
        self.model = model.to(ctx.device).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=bool(args.trust_remote_code))
        if self.scorer == "classifier":
            self.tokenizer.padding_side = "right"
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            if self.model.config.pad_token_id is None:  # HF pools each row's last non-pad token
                self.model.config.pad_token_id = self.tokenizer.pad_token_id
            self.max_length = min(getattr(self.model.config, "max_position_embeddings", 2048) or 2048, 8192)
        log(f"reward model: {path} ({type(self.model).__name__}, {self.scorer})")

    @staticmethod
    def _read_config(path: Path, trust_remote_code: bool) -> dict:
        if not path.is_dir():
            raise UserError(f"reward model folder not found: {path}\n  download one, e.g. "
                            f"`modelscope download --model Shanghai_AI_Laboratory/internlm2-1_8b-reward "
                            f"--local_dir {path}`, or use --reward rule (offline)")
        config_file = path / "config.json"
        if not config_file.is_file():
            raise UserError(f"{path} has no config.json: not a Hugging Face model folder")
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if config.get("auto_map") and not trust_remote_code:
            raise UserError(f"{path} runs its own Python code (auto_map in config.json: "
                            f"{', '.join(config['auto_map'])}); read it, then pass --trust_remote_code 1")
        return config

    def _render(self, messages: list) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)

    @torch.no_grad()
    def score(self, chats: list) -> torch.Tensor:
        scores = []
        for i in range(0, len(chats), self.chunk):
            part = chats[i:i + self.chunk]
            if self.scorer == "get_scores":
                got = self.model.get_scores(self.tokenizer, part)
                scores += got if isinstance(got, (list, tuple)) else [got]
                continue
            enc = self.tokenizer([self._render(c) for c in part], return_tensors="pt", padding=True,
                                 truncation=True, max_length=self.max_length).to(self.device)
            scores += self.model(**enc).logits[:, 0].float().tolist()
        return torch.tensor(scores, dtype=torch.float32).clamp(-REWARD_CLIP, REWARD_CLIP)

    def __call__(self, prompts, responses, **_) -> list:
        history = [chatml_messages(p) for p in prompts]
        score = self.score([h + [{"role": "assistant", "content": r}] for h, r in zip(history, responses)])
        if self.reasoning:
            for i, r in enumerate(responses):
                tagged = ANSWER_TAG.search(r)
                if tagged:
                    answer = self.score([history[i] + [{"role": "assistant", "content": tagged.group(1).strip()}]])
                    score[i] = 0.4 * score[i] + 0.6 * answer[0]
        return score.tolist()


def load_reward_fn(spec: str) -> Callable:
    """`module:function` (importable from the repository or the current folder) or `path/file.py:function`."""
    module_name, _, name = spec.rpartition(":")
    if not module_name or not name:
        raise UserError(f"--reward_fn {spec}: write it as module:function or path/to/file.py:function")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser()
            path = path if path.is_file() else repo_path(module_name)
            if not path.is_file():
                raise UserError(f"--reward_fn {spec}: file not found: {path}")
            loader = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        elif (local := Path.cwd() / (module_name.replace(".", "/") + ".py")).is_file():  # a module of the cwd
            loader = importlib.util.spec_from_file_location(module_name, local)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:  # importable from the repository root or an installed package
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"--reward_fn {spec}: cannot import {module_name}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise UserError(f"--reward_fn {spec}: {module_name} has no function {name}")
    return fn


# name -> class built with (args, ctx, log), called with prompts=, responses=, answers=, answer_types=
REWARDS = {"rule": RuleReward, "model": ModelReward, "none": None}


class RewardSet:
    """Sum of the chosen reward, the --reward_fn hook and (reasoning) the format bonus, clipped to [-3, 3]."""

    def __init__(self, args, ctx, log: Callable):
        self.parts = {}
        if REWARDS[args.reward] is not None:
            self.parts[args.reward] = REWARDS[args.reward](args, ctx, log)
        if args.reward_fn:
            self.parts["fn"] = load_reward_fn(args.reward_fn)
        if args.reasoning:
            self.parts["format"] = format_reward
        log(f"reward: {' + '.join(self.parts)}, clipped to [-{REWARD_CLIP:g}, {REWARD_CLIP:g}]")

    def __call__(self, rollout) -> tuple[torch.Tensor, dict]:
        """Rewards [N] on the rollout's device, and each component's mean for the log."""
        samples = dict(prompts=rollout.prompts, responses=rollout.responses, answers=rollout.answers,
                       answer_types=rollout.answer_types)
        total, means = torch.zeros(len(rollout.responses)), {}
        for name, fn in self.parts.items():
            try:
                values = torch.as_tensor(fn(**samples), dtype=torch.float32).reshape(-1)
            except TypeError as e:
                raise UserError(f"reward '{name}' failed: {e}\n  a reward function is called as fn(prompts=, "
                                f"responses=, answers=, answer_types=) and returns one float per response") from None
            if len(values) != len(total) or not torch.isfinite(values).all():
                raise UserError(f"reward '{name}' returned {len(values)} values (finite: "
                                f"{bool(torch.isfinite(values).all())}) for {len(total)} responses")
            total += values
            means[f"reward_{name}"] = float(values.mean())
        return total.clamp(-REWARD_CLIP, REWARD_CLIP).to(rollout.input_ids.device), means
