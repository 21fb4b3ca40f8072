"""Evaluation harnesses behind scripts/eval_bench.py (bench: bits per character, multiple choice, generation) and
scripts/eval_tool_call.py (tool_call: the multi-round tool-calling loop and its metrics)."""
