"""`gcl-hf` command line: one sub-command per job, each implemented in its own module."""

from __future__ import annotations

import importlib
import sys

#: sub-command -> (module with a ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("gcl_hf.demo.run", "GCL vs CLIP loss on the embedded offline corpus: 3x3 Recall@k table"),
    "train": ("gcl_hf.cli.train", "fine-tune a CLIP-like checkpoint with GCL (HfArgumentParser flags)"),
    "eval": ("gcl_hf.cli.eval", "evaluate a model on M-BEIR, MMEB or CoVR and write JSON"),
    "encode": ("gcl_hf.cli.encode", "embed a pool once into the resumable cache, sharded across processes"),
    "push": ("gcl_hf.cli.push", "publish a model (full, LoRA adapter or merged backbone) with a model card"),
}


def _usage() -> str:
    lines = ["usage: gcl-hf <command> [options]", "", "commands:"]
    lines += [f"  {name:<7} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `gcl-hf <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from gcl_hf import __version__

        print(f"gcl-hf {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"gcl-hf: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
