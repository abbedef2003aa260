"""The command line: argument parsing (main.py) and one renderer per verb (output.py)."""
