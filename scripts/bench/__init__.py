"""Benchmarks behind scripts/bench_model.py (model: forward/backward and decoding throughput, device-dtype checks)
and scripts/bench_train.py (train: the real training loop on synthetic tokens, or a stage script end to end).
Each prints one JSON line per result; none of them is a pass/fail test."""
