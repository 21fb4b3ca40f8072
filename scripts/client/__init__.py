"""Clients of an OpenAI-compatible server: the terminal chat behind scripts/chat_openai_api.py (chat). Needs only
the `openai` package and model/chat_protocol.py, no torch, so it runs on a machine that only talks to a server."""
