"""`python -m edge` runs the edge command."""

from edge.cli import main

main(prog_name="edge")
