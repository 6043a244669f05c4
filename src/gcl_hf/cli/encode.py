"""`gcl-hf encode`: embed a pool (a file, a folder of documents, or a benchmark's pools/queries) once into a
searchable index.

Run it alone or under a launcher; each process then encodes its share of the shards::

    gcl-hf encode --model DIR_OR_REPO --pool my_docs/ --cache-dir emb/      # images + same-name .txt files
    gcl-hf search --index emb/<fingerprint> --text "a red boat" --image query.jpg

    torchrun --nproc_per_node 8 -m gcl_hf.cli encode --model DIR_OR_REPO \\
        --benchmark mbeir --root M-BEIR --option pool='"global"' --cache-dir emb/
    accelerate launch -m gcl_hf.cli encode --model DIR_OR_REPO --pool pool.jsonl --cache-dir emb/

The cache lives in ``CACHE_DIR/<fingerprint>/`` (``.npy`` shards, fingerprint of model + processor +
pool); a run that crashed is resumed by running the same command again (any number of processes).
``gcl-hf eval --cache-dir CACHE_DIR`` and :func:`gcl_hf.evaluate_retrieval` read the same cache. Beside the
shards go the ids of the rows (``documents/``, a ``datasets`` dataset with ``id``, ``text``, ``modality``,
image path) and ``gcl_index.json`` (model reference and fingerprints): the directory is a
:class:`~gcl_hf.retrieval.index.GCLIndex` that ``gcl-hf search --index`` queries.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gcl_hf.cli.common import CLIError, GCLArgumentParser, load_model, load_processor, parse_options

if TYPE_CHECKING:  # the command's imports stay lazy (fast --help)
    import torch

    from gcl_hf.retrieval.options import EncodeOptions

__all__ = ["build_parser", "encode_options", "load_pool_file", "main", "parse_args"]

_PROG = "gcl-hf encode"
_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def build_parser() -> GCLArgumentParser:
    p = GCLArgumentParser(prog=_PROG, description=__doc__)
    p.add_argument("--model", required=True,
                   help="saved GCLModel / adapter / plain CLIP-like checkpoint: local directory or Hub id")
    p.add_argument("--revision", help="model revision (branch, tag or commit sha)")
    p.add_argument("--processor", help="processor to use (default: the model's own, else its base model's)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--benchmark", choices=["mbeir", "mmeb", "covr"], help="encode a benchmark's pools/queries")
    source.add_argument("--pool", help="a folder of documents (image files and .txt files, paired by name), or a "
                                        "JSONL or parquet file with the columns id, modality ('image', 'text' or "
                                        "'image,text'), text and/or image")
    p.add_argument("--root", help="benchmark root directory (published layout) or Hub dataset repo (--benchmark)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                   help="benchmark loader option, e.g. --option pool='\"global\"' --option check_images=false "
                        "(repeatable)")
    p.add_argument("--which", choices=["corpus", "queries", "both"], default="corpus",
                   help="what to encode from --benchmark: the candidate pools (deduplicated), the queries, or both")
    p.add_argument("--image-root", help="where relative image paths resolve (default: the --pool file's directory; "
                                        "for --benchmark, the loader's)")
    p.add_argument("--cache-dir", required=True, help="embedding cache directory (one sub-directory per fingerprint)")
    p.add_argument("--data-cache", help="where a --pool file is parsed to Arrow (default: the datasets cache)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per encoder forward pass")
    p.add_argument("--num-workers", type=int, default=0, help="dataloader workers decoding images, per process")
    p.add_argument("--shard-size", type=int, default=65536, help="rows per cache shard (the unit of resume)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: GPU LOCAL_RANK if any, else cpu)")
    p.add_argument("--dist-backend", help="torch.distributed backend when launched with several processes "
                                          "(default gloo)")
    p.add_argument("--backend", dest="dist_backend", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # 0.1 name
    p.add_argument("--output", help="write a JSON summary here (rank 0): per dataset its directory, fingerprint, "
                                    "rows and rows/s")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv: list[str] | None = None) -> Any:
    p = build_parser()
    args = p.parse_args(argv)
    if args.benchmark and not args.root:
        p.error("--benchmark needs --root")
    if args.pool and args.option:
        p.error("--option applies to --benchmark only")
    for name in ("batch_size", "shard_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def load_pool_file(path: str | Path, *, cache_dir: str | Path | None = None) -> Any:
    """A pool as an Arrow-backed ``datasets.Dataset``: a folder of documents
    (:func:`~gcl_hf.retrieval.index.documents_from_folder`), or a JSONL/parquet file (memory-mapped).

    A file needs the columns ``id`` and ``modality`` plus ``text`` and/or ``image`` (image paths, relative ones
    resolved at encoding time). A missing file or column raises :class:`CLIError` naming it.
    """
    import datasets

    from gcl_hf.retrieval.documents import check_ids, documents_from_folder

    path = Path(path)
    if path.is_dir():
        try:
            return documents_from_folder(path)
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
    if not path.is_file():
        raise CLIError(f"pool file not found (nor a folder of documents): {path}")
    builder = _FORMATS.get(path.suffix.lower())
    if builder is None:
        raise CLIError(f"{path}: unsupported pool format {path.suffix!r} (use a folder, .jsonl, .json or .parquet)")
    if builder == "json" and not _has_content(path):
        raise CLIError(f"{path}: the pool file is empty (no rows); write one JSON object per line")
    try:
        dataset = datasets.load_dataset(builder, data_files=str(path.resolve()), split="train",
                                        cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception as exc:  # noqa: BLE001 - the parser's message, located at the file
        raise CLIError(f"{path}: cannot read the pool file: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
    if len(dataset) == 0:
        raise CLIError(f"{path}: the pool file has no rows")
    columns = dataset.column_names
    missing = [c for c in ("id", "modality") if c not in columns]
    if not {"text", "image"} & set(columns):
        missing.append("text' or 'image")
    if missing:
        raise CLIError(f"{path}: missing column '{missing[0]}' (columns: {columns})")
    try:  # a hit names one document: ids present and unique
        check_ids(dataset.select_columns(["id"]).with_format(None)["id"], str(path))
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    return dataset


def _has_content(path: Path) -> bool:
    """Whether a text file holds anything but whitespace (read in blocks; stops at the first character)."""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            if block.strip():
                return True
    return False


def _items(args: Any) -> list[tuple[str, Any, str | None]]:
    """``(name, dataset, image_root)`` for everything to encode."""
    if args.pool:
        dataset = load_pool_file(args.pool, cache_dir=args.data_cache)
        pool = Path(args.pool).resolve()
        root = args.image_root or str(pool if pool.is_dir() else pool.parent)
        return [(pool.stem, dataset, root)]
    from gcl_hf.cli.eval import load_tasks

    options = parse_options(args.option, _PROG)
    if args.image_root:
        options["frames_root" if args.benchmark == "covr" else "image_root"] = args.image_root
    if args.data_cache and args.benchmark == "mbeir":
        options.setdefault("cache_dir", args.data_cache)
    tasks = load_tasks(args.benchmark, args.root, options)
    items: list[tuple[str, Any, str | None]] = []
    seen: set[Any] = set()
    if args.which in ("corpus", "both"):
        for task in tasks:  # a global pool is one Dataset shared by every task: encode it once
            source = task.meta.get("corpus_file") or id(task.corpus)
            if source in seen:
                continue
            seen.add(source)
            name = Path(source).stem if isinstance(source, str) else f"{task.name}/corpus"
            items.append((name, task.corpus, task.image_root))
    if args.which in ("queries", "both"):
        items += [(f"{task.name}/queries", task.queries, task.image_root) for task in tasks]
    return items


def _report(name: str, run: Any) -> str:
    head = (f"{name}: {run.num_rows} rows x {run.embeddings.dim} -> {run.directory} (fingerprint {run.fingerprint}; "
            f"query it with gcl-hf search --index {run.directory})")
    if not run.total_encoded:
        return f"{head}; all cached"
    per = f" {run.encoded_rows}" if run.num_processes > 1 else ""
    return (f"{head}; encoded {run.total_encoded} rows on {run.num_processes} process(es){per} "
            f"in {run.seconds:.2f}s = {run.rows_per_second:.1f} rows/s")


def encode_options(args: Any, device: str | torch.device | None = None) -> EncodeOptions:
    """The :class:`~gcl_hf.retrieval.options.EncodeOptions` of parsed ``args`` (each dataset adds its image root)."""
    from gcl_hf.retrieval.options import EncodeOptions

    return EncodeOptions(batch_size=args.batch_size, num_workers=args.num_workers, device=device,
                         cache_dir=args.cache_dir, shard_size=args.shard_size, show_progress=not args.quiet)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quiet:  # datasets' own bars (Arrow writes, maps) too, not only ours
        import datasets

        datasets.disable_progress_bars()

    from gcl_hf.retrieval.distributed_encoding import (distributed_session, encode_corpus_distributed,
                                                       main_process_first, process_device)
    from gcl_hf.retrieval.encoding import EncodingError
    from gcl_hf.retrieval.index import GCLIndex

    with distributed_session(backend=args.dist_backend) as info:  # ends only a process group it started
        device = process_device(args.device, info.local_rank)
        options = encode_options(args, device)
        model = load_model(args.model, revision=args.revision, device=str(device))
        processor = load_processor(args.model, model, processor=args.processor, revision=args.revision, prog=_PROG)
        with main_process_first():  # rank 0 parses pool files into the Arrow cache, the others then read it
            items = _items(args)
        summary: dict[str, Any] = {}
        for name, dataset, image_root in items:
            try:
                run = encode_corpus_distributed(model, processor, dataset, options, image_root=image_root,
                                                desc=f"encoding {name}")
            except EncodingError as exc:
                raise CLIError(f"{name}: {exc}") from exc
            summary[name] = run.summary()
            if info.is_main:  # the ids (and model reference) beside the vectors: a searchable GCLIndex
                GCLIndex.from_embeddings(
                    run.embeddings, dataset, model, processor, image_root=image_root, model_ref=_reference(args.model),
                    revision=args.revision, processor_ref=_reference(args.processor) if args.processor else None,
                ).save(run.directory)
                print(_report(name, run), flush=True)
        if info.is_main and args.output:
            payload = {"model": args.model, "revision": args.revision, "num_processes": info.world_size,
                       "datasets": summary}
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(payload, indent=2))
            print(f"wrote {args.output}")
    return 0


def _reference(name: str) -> str:
    """A local model directory as an absolute path (the index is then usable from any working directory)."""
    return str(Path(name).resolve()) if Path(name).is_dir() else name


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
