"""Tool calling: the SFT data builders behind scripts/data_prepare_toolcall.py (synth: dialogues generated from the
real tool library in library/, the default `local` source; data: the corpus and hub sources and the shared record
format) and the safe mock tools that the evaluation (scripts/evals/tool_call.py), the training manager's MCP server
and the web app share (tool_mocks)."""
