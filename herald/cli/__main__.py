"""`python -m herald.cli`: the herald command."""

from herald.cli import main

main()
