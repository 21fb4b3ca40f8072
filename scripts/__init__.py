"""Command-line tools around the model: serving, chat clients, conversion, benchmarks, corpus building."""
