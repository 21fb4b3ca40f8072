"""Export and import of weights behind scripts/convert_to_hf.py (hf: Llama / Qwen2-MoE folders), scripts/export_gguf.py
(gguf: llama.cpp / Ollama) and scripts/convert_model.py (minimind: MiniMind's own remote-code folder and back);
common holds what all three share (checkpoint flags, atomic output folders, tokenizer copy, verification)."""
