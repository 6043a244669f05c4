"""`gcl-hf search`: query an encoded corpus (a `GCLIndex` directory) by text, image or both.

    gcl-hf encode --model out/gcl --pool my_docs/ --cache-dir emb/     # prints the index directory
    gcl-hf search --index emb/<fingerprint> --text "a red boat"
    gcl-hf search --index emb/<fingerprint> --image query.jpg --text "the same, at night" -k 5

Prints one line per hit: rank, score (cosine similarity), id, and the document's text when it has one (control
characters escaped, so a document cannot send escape codes to the terminal); ``--json``
prints ``{"ids": [...], "scores": [...]}`` instead. The model is the one recorded in the index unless
``--model`` names another copy of it; a model or processor other than the corpus was encoded with is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gcl_hf.cli.common import (SEARCH_BACKEND_CHOICES, CLIError, GCLArgumentParser, load_model, one_line,
                               processor_not_found)

__all__ = ["build_parser", "main", "parse_args"]

_PROG = "gcl-hf search"


def build_parser() -> GCLArgumentParser:
    p = GCLArgumentParser(prog=_PROG, description=__doc__)
    p.add_argument("--index", required=True, help="index directory (written by gcl-hf encode or GCLIndex.save)")
    p.add_argument("--text", help="query text")
    p.add_argument("--image", help="query image file (with --text: a fused image+text query)")
    p.add_argument("-k", "--top-k", type=int, default=10, help="number of hits to print")
    p.add_argument("--model", help="the model to encode the query with (default: the one recorded in the index)")
    p.add_argument("--revision", help="revision of --model (branch, tag or commit sha)")
    p.add_argument("--processor", help="processor (default: the one recorded in the index, else the model's)")
    p.add_argument("--search-backend", choices=SEARCH_BACKEND_CHOICES, default="exact",
                   help="exact streaming top-k, or a faiss flat index (needs faiss installed)")
    p.add_argument("--backend", choices=SEARCH_BACKEND_CHOICES, dest="search_backend", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # the 0.1 name
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--json", action="store_true", help="print the hits as JSON")
    return p


def parse_args(argv: list[str] | None = None) -> Any:
    p = build_parser()
    args = p.parse_args(argv)
    if args.text is None and args.image is None:
        p.error("give --text, --image or both")
    if args.text is not None and not args.text.strip():
        p.error("--text is empty")
    if args.top_k < 1:
        p.error("--top-k must be >= 1")
    return args


def _load_index(args: Any) -> Any:
    from pathlib import Path

    from gcl_hf.modeling.loading import ProcessorNotFoundError, load_processor
    from gcl_hf.retrieval.index import GCLIndex, IndexMismatchError

    model = processor = None
    if args.model:
        model = load_model(args.model, revision=args.revision, device=args.device)
    if args.processor:
        try:
            processor = load_processor(args.processor)
        except (OSError, ValueError) as exc:
            raise CLIError(f"--processor {args.processor}: {one_line(exc)}") from exc
    if args.search_backend == "faiss":
        try:
            import faiss  # noqa: F401
        except ImportError:
            raise CLIError("--search-backend faiss needs faiss: pip install 'gcl-hf[faiss]'") from None
    if args.image is not None and not Path(args.image).is_file():
        raise CLIError(f"--image: file not found: {args.image}")
    try:
        return GCLIndex.load(args.index, model, processor, backend=args.search_backend, device=args.device)
    except ProcessorNotFoundError as exc:  # the index's recorded processor (or model's) did not load
        raise processor_not_found(f"the index {args.index!r}", exc) from exc
    except (IndexMismatchError, ValueError) as exc:
        raise CLIError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    index = _load_index(args)
    if args.device is None and model_device(index.model) == "cpu":
        import torch

        if torch.cuda.is_available():
            index.model.to("cuda")
    try:
        hits = index.search(text=args.text, image=args.image, k=args.top_k)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    if args.json:
        print(json.dumps({"ids": hits.ids, "scores": hits.scores}))
        return 0
    texts = index.documents.select(hits.rows)["text"] if "text" in index.documents.column_names and hits.rows else []
    ids = [printable(i) for i in hits.ids]
    width = max((len(i) for i in ids), default=2)
    for rank, (doc, score) in enumerate(zip(ids, hits.scores), start=1):
        text = texts[rank - 1] if texts else None
        line = f"{rank:>3}  {score:.4f}  {doc:<{width}}"
        print(f"{line}  {printable(' '.join(text.split()))}" if text else line.rstrip())
    return 0


def printable(value: str) -> str:
    """``value`` with control characters (terminal escape codes, bidi overrides, ...) shown as ``\\x1b``-style
    escapes, so a document's text can never drive the terminal it is printed to."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in value)


def model_device(model: Any) -> str:
    param = next(model.parameters(), None)
    return "cpu" if param is None else param.device.type


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
