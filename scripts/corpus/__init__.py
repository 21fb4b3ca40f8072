"""Building blocks of scripts/build_corpus.py: fetch, extract (sources), clean and split (text), assemble (build), derive."""
