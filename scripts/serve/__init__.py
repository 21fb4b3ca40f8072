"""The serving floor: the OpenAI-compatible API server and the training manager (docs/ARCHITECTURE.md, "Serving floor")."""
