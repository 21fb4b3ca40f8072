"""The interactive tutorial's data export (scripts/export_tutorial_data.py is its command line): facts computed
from this repository's own model, trainers, tokenizer and scripts, written as JSON the web app imports."""
