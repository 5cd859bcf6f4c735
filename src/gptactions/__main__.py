"""`python -m gptactions` runs the command line."""

from gptactions.cli import main

main()
