"""The web demo's parts that need no Streamlit page: model listing and loading, streaming replies, the bind check
(scripts/web_demo.py is the page on top)."""
