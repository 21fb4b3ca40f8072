"""Tool calling: the SFT data builder behind scripts/data_prepare_toolcall.py (data) and the safe mock tools that
the data, the evaluation (scripts/evals/tool_call.py), the training manager's MCP server and the web app share
(tool_mocks)."""
