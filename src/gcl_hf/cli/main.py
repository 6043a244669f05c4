"""`gcl-hf` command line: one sub-command per job, each implemented in its own module.

A known failure (missing file, malformed benchmark row, the Hub offline or a repo that does not exist, a bad
argument) prints one ``gcl-hf <command>: error: ...`` line on stderr and exits with status 1 (2 for bad
arguments); ``gcl-hf --debug <command> ...`` (or ``--debug`` after the command, or ``GCL_HF_DEBUG=1``) shows
the traceback instead.

Start-up stays light: ``gcl-hf --help``, ``--version`` and every ``gcl-hf <command> --help`` import no torch,
transformers or datasets (each sub-command module imports them inside the code that runs); the Auto classes
are registered (:func:`gcl_hf.register_auto_classes`) only when a command actually runs.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import warnings

from gcl_hf.cli.common import CLIError, known_errors, normalize_flags, one_line

#: sub-command -> (module with a ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("gcl_hf.demo.run", "+CL vs +GCL on the embedded complementary corpus: 3x3 Recall@1, mixed and local pools, over seeds"),
    "train": ("gcl_hf.cli.train", "fine-tune a CLIP-like checkpoint with GCL (HfArgumentParser flags)"),
    "eval": ("gcl_hf.cli.eval", "evaluate a model on M-BEIR, MMEB or CoVR; write JSON and rankings"),
    "encode": ("gcl_hf.cli.encode", "embed a pool (file or folder) once into a searchable, resumable index"),
    "search": ("gcl_hf.cli.search", "query an encoded corpus by text, image or both"),
    "push": ("gcl_hf.cli.push", "publish a model (full, LoRA adapter or merged backbone) with a model card"),
    "convert-vista": ("gcl_hf.cli.convert_vista", "convert a VISTA (Visualized BGE) .pth into a VistaModel directory"),
}

#: commands whose parser is HfArgumentParser (it accepts both spellings itself, and owns a ``--debug`` flag)
_HF_PARSER = {"train"}


def _usage() -> str:
    lines = ["usage: gcl-hf [--debug] <command> [options]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `gcl-hf <command> --help` for a command's options. Flags take dashes or underscores",
              "(--batch-size = --batch_size); --debug shows the traceback of a failure."]
    return "\n".join(lines)


#: Others' warnings a gcl-hf command filters because they are known noise, not news for the user:
#: peft reads transformers' deprecated ``is_gradient_checkpointing`` alias of every model it wraps (LoRA).
_KNOWN_NOISE = ((FutureWarning, r"`is_gradient_checkpointing` is deprecated"),)


def _filter_known_noise() -> None:
    for category, message in _KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)


def _asks_for_help(argv: list[str]) -> bool:
    options = argv[: argv.index("--")] if "--" in argv else argv
    return any(a in ("-h", "--help") for a in options)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("GCL_HF_DEBUG", "").lower() in ("1", "true", "yes")
    while argv and argv[0] == "--debug":
        debug, argv = True, argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from gcl_hf import __version__

        print(f"gcl-hf {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"gcl-hf: error: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if command not in _HF_PARSER:
        if "--debug" in rest[: rest.index("--") if "--" in rest else len(rest)]:
            debug = True
            rest = [a for a in rest if a != "--debug"]
        rest = normalize_flags(rest)
    prog = f"gcl-hf {command}"
    try:
        module = importlib.import_module(COMMANDS[command][0])  # before torch: a module may set its environment
        if not _asks_for_help(rest):
            import gcl_hf

            _filter_known_noise()
            gcl_hf.register_auto_classes()
        return int(module.main(rest) or 0)
    except SystemExit as exc:  # --help or a bad argument (argparse): already reported
        if not isinstance(exc, CLIError):
            raise
        return _report(prog, exc, debug)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except known_errors() as exc:
        return _report(prog, exc, debug)


def _report(prog: str, exc: BaseException, debug: bool) -> int:
    """A known failure: one line on stderr (with ``--debug``, the traceback first), exit status 1."""
    if debug:
        traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
    else:
        print(f"{prog}: error: {one_line(exc)} (--debug shows the traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
