"""`gcl-hf encode`: embed a candidate pool (or a benchmark's queries) once into the on-disk cache.

Run it alone or under a launcher; each process then encodes its share of the shards::

    torchrun --nproc_per_node 8 -m gcl_hf.cli encode --model DIR_OR_REPO \\
        --benchmark mbeir --root M-BEIR --option pool='"global"' --cache-dir emb/
    accelerate launch -m gcl_hf.cli encode --model DIR_OR_REPO --pool pool.jsonl --cache-dir emb/

The cache lives in ``CACHE_DIR/<fingerprint>/`` (``.npy`` shards, fingerprint of model + processor +
pool); a run that crashed is resumed by running the same command again (any number of processes).
``gcl-hf eval --cache-dir CACHE_DIR`` and :func:`gcl_hf.evaluate_retrieval` read the same cache.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gcl_hf.cli.common import load_processor, parse_options

__all__ = ["load_pool_file", "main", "parse_args"]

_PROG = "gcl-hf encode"
#: columns a pool file must have (``text`` and/or ``image`` as its modalities need)
_REQUIRED = ("id", "modality")
_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=_PROG, description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True,
                   help="saved GCLModel / adapter / plain CLIP-like checkpoint: local directory or Hub id")
    p.add_argument("--revision", help="model revision (branch, tag or commit sha)")
    p.add_argument("--processor", help="processor to use (default: the model's own, else its base model's)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--benchmark", choices=["mbeir", "mmeb", "covr"], help="encode a benchmark's pools/queries")
    source.add_argument("--pool", help="a JSONL or parquet file with the RetrievalTask columns "
                                        "id, text, image, modality")
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
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=0, help="dataloader workers decoding images, per process")
    p.add_argument("--shard-size", type=int, default=65536, help="rows per cache shard (the unit of resume)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: GPU LOCAL_RANK if any, else cpu)")
    p.add_argument("--backend", help="torch.distributed backend when launched with several processes (default gloo)")
    p.add_argument("--output", help="write a JSON summary here (rank 0): per dataset its directory, fingerprint, "
                                    "rows and rows/s")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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
    """A JSONL/parquet pool file as an Arrow-backed (memory-mapped) ``datasets.Dataset``.

    The file needs the columns ``id`` and ``modality`` plus ``text`` and/or ``image`` (image paths,
    relative ones resolved at encoding time). A missing file or column raises ``SystemExit`` naming it.
    """
    import datasets

    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{_PROG}: pool file not found: {path}")
    builder = _FORMATS.get(path.suffix.lower())
    if builder is None:
        raise SystemExit(f"{_PROG}: {path}: unsupported pool format {path.suffix!r} (use .jsonl, .json or .parquet)")
    try:
        dataset = datasets.load_dataset(builder, data_files=str(path.resolve()), split="train",
                                        cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception as exc:  # noqa: BLE001 - the parser's message, located at the file
        raise SystemExit(f"{_PROG}: {path}: cannot read the pool file: {exc}") from exc
    missing = [c for c in _REQUIRED if c not in dataset.column_names]
    if not any(c in dataset.column_names for c in ("text", "image")):
        missing.append("text' or 'image")
    if missing:
        raise SystemExit(f"{_PROG}: {path}: missing column '{missing[0]}' (columns: {dataset.column_names})")
    return dataset


def _items(args: argparse.Namespace) -> list[tuple[str, Any, str | None]]:
    """``(name, dataset, image_root)`` for everything to encode."""
    if args.pool:
        dataset = load_pool_file(args.pool, cache_dir=args.data_cache)
        root = args.image_root or str(Path(args.pool).resolve().parent)
        return [(Path(args.pool).stem, dataset, root)]
    from gcl_hf.benchmarks import load_benchmark

    options = parse_options(args.option, _PROG)
    if args.image_root:
        options["frames_root" if args.benchmark == "covr" else "image_root"] = args.image_root
    if args.data_cache and args.benchmark == "mbeir":
        options.setdefault("cache_dir", args.data_cache)
    tasks = load_benchmark(args.benchmark, args.root, **options)
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
    head = f"{name}: {run.num_rows} rows x {run.embeddings.dim} -> {run.directory} (fingerprint {run.fingerprint})"
    if not run.total_encoded:
        return f"{head}; all cached"
    per = f" {run.encoded_rows}" if run.num_processes > 1 else ""
    return (f"{head}; encoded {run.total_encoded} rows on {run.num_processes} process(es){per} "
            f"in {run.seconds:.2f}s = {run.rows_per_second:.1f} rows/s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch.distributed as dist

    from gcl_hf import hub
    from gcl_hf.retrieval.distributed_encoding import (encode_corpus_distributed, init_distributed, main_process_first,
                                       process_device)
    from gcl_hf.retrieval.encoding import EncodingError

    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(backend=args.backend)
    try:
        device = process_device(args.device, info.local_rank)
        model = hub.load(args.model, revision=args.revision).to(device)
        processor = load_processor(args.model, model, processor=args.processor, revision=args.revision, prog=_PROG)
        with main_process_first():  # rank 0 parses pool files into the Arrow cache, the others then read it
            items = _items(args)
        summary: dict[str, Any] = {}
        for name, dataset, image_root in items:
            try:
                run = encode_corpus_distributed(
                    model, processor, dataset, cache_dir=args.cache_dir, image_root=image_root,
                    batch_size=args.batch_size, shard_size=args.shard_size, num_workers=args.num_workers,
                    show_progress=info.is_main and not args.quiet, desc=f"encoding {name}",
                )
            except EncodingError as exc:
                raise SystemExit(f"{_PROG}: {name}: {exc}") from exc
            summary[name] = run.summary()
            if info.is_main:
                print(_report(name, run), flush=True)
        if info.is_main and args.output:
            payload = {"model": args.model, "revision": args.revision, "num_processes": info.world_size,
                       "datasets": summary}
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(payload, indent=2))
            print(f"wrote {args.output}")
    finally:
        if owns_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
