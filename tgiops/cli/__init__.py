"""The command line: main.py (entry and the one error door), args.py (shared options), one
module per verb group that parses and prints, output.py (the text and JSON renderers)."""
