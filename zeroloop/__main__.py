"""`python -m zeroloop` is the `zeroloop` command."""

from zeroloop.cli.main import main

main()
