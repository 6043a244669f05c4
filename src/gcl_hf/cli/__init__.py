"""The `gcl-hf` command line: one module per sub-command, dispatched by `gcl_hf.cli.main`."""

from gcl_hf.cli.main import COMMANDS, main

__all__ = ["COMMANDS", "main"]
