"""Helpers shared by the `gcl-hf` sub-commands: one argument-parser style, ``KEY=JSON`` options, finding a
model's processor, and the errors a command reports as one line instead of a traceback.

Flag conventions (every sub-command): multi-word flags take dashes or underscores (``--batch-size`` and
``--batch_size`` are the same flag), the model is always ``--model``, ``--help`` shows each default, and a bad
argument is one ``error:`` line on stderr (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from gcl_hf.modeling.loading import ProcessorNotFoundError

__all__ = ["SEARCH_BACKEND_CHOICES", "CLIError", "GCLArgumentParser", "known_errors", "load_model", "load_processor",
           "normalize_flags", "one_line", "parse_options", "processor_not_found"]

#: ``--search-backend`` choices: `gcl_hf.retrieval.search.SEARCH_BACKENDS`, spelled out because ``--help`` must not
#: import torch (tests/cli/test_search.py keeps the two in step).
SEARCH_BACKEND_CHOICES = ("exact", "faiss")


class CLIError(SystemExit):
    """A user-facing failure of a command (bad input, missing file): one line on stderr, exit status 1.

    A ``SystemExit`` so that a command's ``main`` called from Python, outside the `gcl-hf` dispatcher, also ends
    with the message and no traceback."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def normalize_flags(argv: Sequence[str], known: set[str] | None = None) -> list[str]:
    """``--batch_size=4`` → ``--batch-size=4``: underscores in a flag's name become dashes.

    With ``known`` (the parser's option strings) only names that then match a known option are rewritten;
    tokens after a bare ``--`` are left alone.
    """
    out: list[str] = []
    rest = False
    for token in argv:
        if rest or not token.startswith("--") or token == "--":
            rest = rest or token == "--"
            out.append(token)
            continue
        name, sep, value = token.partition("=")
        dashed = "--" + name[2:].replace("_", "-")
        if dashed != name and (known is None or (dashed in known and name not in known)):
            token = dashed + sep + value
        out.append(token)
    return out


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends ``(default: X)`` to options that have a real default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or default is None or default is argparse.SUPPRESS or default is False
                or default == [] or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class GCLArgumentParser(argparse.ArgumentParser):
    """The `gcl-hf` sub-commands' parser: dash/underscore-agnostic flags, defaults in ``--help``, and bad
    arguments reported as a single line (``gcl-hf eval: error: ... (see --help)``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        kwargs.setdefault("epilog", "Multi-word flags take dashes or underscores (--batch-size = --batch_size).")
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true",
                          help="show the full traceback when the command fails (also: gcl-hf --debug <command>)")

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(normalize_flags(argv, set(self._option_string_actions)), namespace)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_options(items: list[str], prog: str) -> dict[str, Any]:
    """``["pool=\\"global\\"", "instructions=true"]`` → ``{"pool": "global", "instructions": True}``.

    A value that is not JSON is kept as a string; an item without ``=`` exits with a message naming it.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--option {item!r}: expected KEY=JSON")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (library messages often add hints on later lines)."""
    text = str(exc).strip()
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first or type(exc).__name__


def known_errors() -> tuple[type[BaseException], ...]:
    """Exception types a command reports as one line: bad input data or arguments, missing files, the Hub
    unreachable or a repo/revision that does not exist. Anything else is a bug and keeps its traceback."""
    from huggingface_hub import errors as hub_errors

    from gcl_hf.errors import RecordError
    from gcl_hf.modeling.loading import UnsafeWeightsError

    # RecordError: every bad-record family (training data, benchmarks, images, encoding, caches); OSError: missing
    # files and sources, unsafe weights, an unreachable Hub
    return (CLIError, OSError, RecordError, UnsafeWeightsError, hub_errors.HFValidationError,
            hub_errors.OfflineModeIsEnabled, hub_errors.HfHubHTTPError)


def load_model(name: str, *, revision: str | None = None, device: str | None = None) -> Any:
    """:func:`gcl_hf.hub.load` (a saved `GCLModel`, an adapter or a plain CLIP-like checkpoint; local directory
    or Hub id), in eval mode on ``device`` (default: CUDA when available); a repo that is not a model is a
    :class:`CLIError`."""
    import torch

    from gcl_hf import hub

    try:
        model = hub.load(name, revision=revision)
    except ValueError as exc:  # e.g. a directory or repo holding no model
        raise CLIError(f"--model {name}: {one_line(exc)}") from exc
    return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_processor(model_name: str, model: Any, *, processor: str | None = None, revision: str | None = None,
                   prog: str = "gcl-hf") -> Any:
    """:func:`gcl_hf.modeling.loading.find_processor` (``--processor``, else the model's own at ``--revision``,
    else its base model's), failing as a :class:`CLIError` that says to pass ``--processor``."""
    from gcl_hf.modeling.loading import ProcessorNotFoundError, find_processor

    try:
        return find_processor(model, processor=processor, name_or_path=model_name, revision=revision)
    except ProcessorNotFoundError as exc:
        raise processor_not_found(repr(model_name), exc) from exc


def processor_not_found(what: str, exc: ProcessorNotFoundError) -> CLIError:
    """The one line a command reports for a :class:`~gcl_hf.modeling.loading.ProcessorNotFoundError`: ``what`` had
    no processor, each candidate tried and why, and the flag that fixes it."""
    return CLIError(f"no processor found for {what}; pass --processor (tried {'; '.join(exc.tried) or 'nothing'})")
