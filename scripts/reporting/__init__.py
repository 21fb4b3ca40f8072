"""The logic behind scripts/report.py (training report) and scripts/demo_report.py (the demo summary)."""
