"""Benchmark `gcl_hf.retrieval.search.exact_topk` (float32 and bf16-rescore) against faiss `IndexFlatIP` and
the bare chunked matmuls, on the same embeddings, in one process.

Targets (the machine's own bound, in the same run): the default search (``precision="auto"``) <= 0.9x faiss
IndexFlatIP and <= 1.05x the fastest bare chunked float32 matmuls (the same tiles, the same output buffer,
the same thread split, no top-k; on torch's BLAS and on numpy's, and with torch's own threads); float32 tiles
(``precision="float32"``) <= 1.05x the same bare matmuls; identical top-k to faiss (a differing row only where
the two ids' float64 scores tie to 1e-5). The float32 search is also run with each BLAS forced
(``GCL_HF_SEARCH_BLAS``). Also reported: the bf16 first pass with exact rescoring (``precision="bf16-rescore"``)
against faiss and against its own bare bf16 matmuls, which tiles "auto" chose, and that every precision returns
bit-identical results. ``--shared-direction W`` crowds the embeddings around one direction (weight ``W``: the
scores bunch together as for an anisotropic encoder), where "auto" should keep float32 tiles.
All contenders run once per round in alternating order (ABBA...); ratios are medians of the per-round
ratios of wall times. One JSON line goes to ``bench/results.jsonl`` (``--quick``: results-quick.jsonl).

    python bench/bench_search.py            # 200k x 512 float32 unit vectors, 2k queries, k=10, 5 rounds
    python bench/bench_search.py --quick    # 20k x 128, 500 queries, 2 rounds, 1 thread
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    common_args,
    interleave,
    machine_info,
    make_record,
    paired_ratio,
    report,
    resolve_threads,
    stats,
    write_record,
)

from gcl_hf.retrieval.search import bf16_supported, exact_topk
from gcl_hf.retrieval.search.blas import (
    ENV_VAR,
    cpu_info,
    matmul_into,
    numpy_blas_name,
    numpy_blas_threads,
    resolve_backend,
)
from gcl_hf.retrieval.search.engine import plan_search

AUTO_LOGGER = "gcl_hf.retrieval.search.exact"


class _Choices(logging.Handler):
    """Collects the tiles ``precision="auto"`` chose (exact_topk logs them at debug level)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "chose" in message:
            self.seen.add(message.rsplit("chose", 1)[1].replace("tiles", "").strip())


def cpu_features() -> dict:
    """What decides the speed of each path: the CPU's SIMD / matrix flags, torch's dispatch level, the BLAS."""
    flags = cpu_info()["flags"]
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
              "amx_int8")
    config = torch.__config__.show()
    torch_blas = next((part.split("=", 1)[1] for part in config.replace(",", " ").split() if part.startswith("BLAS_INFO=")),
                      "unknown")
    return {"flags": [f for f in wanted if f in flags],
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16_units": bf16_supported(),
            "torch_blas": torch_blas, "numpy_blas": numpy_blas_name(), "search_blas": resolve_backend(),
            "search_blas_env": os.environ.get(ENV_VAR, "")}


def _faiss_blas() -> str:
    """faiss's bundled BLAS and its kernel (threadpoolctl, when installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    libs = [i for i in threadpool_info() if i["user_api"] == "blas" and "faiss" in i["filepath"]]
    return ", ".join(f"{i['internal_api']} {i['version']} ({i.get('architecture')})" for i in libs) or "unknown"


def _normalised(rng: np.random.Generator, n: int, d: int, shared: float = 0.0) -> np.ndarray:
    """Unit vectors: Gaussian, plus ``shared`` times a common unit direction scaled to the noise's norm."""
    x = rng.standard_normal((n, d), dtype=np.float32)
    if shared:
        x[:, 0] += np.float32(shared * np.sqrt(d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@torch.inference_mode()
def bare_matmuls(queries: torch.Tensor, corpus: torch.Tensor, chunk_size: int, query_block: int) -> None:
    """The same float32 tiles in one loop, with torch's own (OpenMP) threads, into one reused buffer."""
    buffer = torch.empty(query_block * chunk_size, dtype=queries.dtype)
    for start in range(0, corpus.shape[0], chunk_size):
        chunk_t = corpus[start:start + chunk_size].T
        width = chunk_t.shape[1]
        for qs in range(0, queries.shape[0], query_block):
            qe = min(qs + query_block, queries.shape[0])
            torch.mm(queries[qs:qe], chunk_t, out=buffer[: (qe - qs) * width].view(qe - qs, width))


def _in_threads(threads: int, work) -> None:
    """``work(t)`` for t < threads in Python threads with one torch (OpenMP) thread each, as exact_topk does."""
    def run(t: int) -> None:
        torch.set_num_threads(1)  # per thread: OpenMP's thread count is a per-thread setting
        work(t)

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, range(threads)))
    finally:
        torch.set_num_threads(previous)


@torch.inference_mode()
def bare_split_matmuls(queries: torch.Tensor, corpus: torch.Tensor, threads: int, chunk_size: int | None,
                       query_block: int | None, k: int, dtype: torch.dtype = torch.float32,
                       blas: str = "torch") -> None:
    """exact_topk's own split on CPU, doing only the matrix products: the corpus chunks shared round-robin
    between Python threads (one torch thread each), every thread multiplying all queries with its chunks in
    the same tiles into a reused buffer; for bf16 each thread also converts its chunks (as exact_topk does).
    ``blas``: "torch" or "numpy" (float32 tiles), as the search's matmul backend does it."""
    plan = plan_search(queries.shape[0], "cpu", chunk_size, query_block, k)
    q = queries.to(dtype)
    starts = list(range(0, corpus.shape[0], plan.chunk_size))

    def run(t: int) -> None:
        chunk_c = torch.empty((plan.chunk_size, q.shape[1]), dtype=dtype) if dtype != corpus.dtype else None
        buffer = torch.empty(plan.query_block * plan.chunk_size, dtype=dtype)
        for start in starts[t::threads]:
            width = min(plan.chunk_size, corpus.shape[0] - start)
            chunk = corpus[start:start + width]
            if chunk_c is not None:
                chunk = chunk_c[:width].copy_(chunk)
            for qs in range(0, q.shape[0], plan.query_block):
                qe = min(qs + plan.query_block, q.shape[0])
                matmul_into(q[qs:qe], chunk, buffer[: (qe - qs) * width].view(qe - qs, width), blas)

    if blas == "numpy":
        with numpy_blas_threads(1 if threads > 1 else torch.get_num_threads()):
            _in_threads(threads, run)
    else:
        _in_threads(threads, run)


def with_blas(name: str, fn):
    """``fn`` with the search's float32 matmul backend forced to ``name`` (through its environment variable)."""
    def run():
        previous = os.environ.get(ENV_VAR)
        os.environ[ENV_VAR] = name
        try:
            return fn()
        finally:
            if previous is None:
                del os.environ[ENV_VAR]
            else:
                os.environ[ENV_VAR] = previous
    return run


def check_identical(q: np.ndarray, c: np.ndarray, ours: np.ndarray, theirs: np.ndarray, tol: float = 1e-5) -> dict:
    """Compare two top-k index lists. A differing row is accepted only as a float-rounding tie: at every rank
    the two ids' float64 scores agree within ``tol``."""
    diff_rows = np.nonzero((ours != theirs).any(axis=1))[0]
    unexplained = 0
    for r in diff_rows:
        qr = q[r].astype(np.float64)
        mine, other = c[ours[r]].astype(np.float64) @ qr, c[theirs[r]].astype(np.float64) @ qr
        unexplained += not bool(np.all(np.abs(mine - other) <= tol))
    return {"rows": int(ours.shape[0]), "rows_differing": len(diff_rows), "rows_unexplained": unexplained}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=int, default=200_000)
    p.add_argument("--queries", type=int, default=2_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--query-block", type=int, default=None)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--shared-direction", type=float, default=0.0,
                   help="weight of one direction every vector shares (0: isotropic; 3: scores crowd together)")
    common_args(p)
    args = p.parse_args()
    if args.quick:
        args.corpus, args.queries, args.dim, args.rounds = 20_000, 500, 128, 2
    threads = resolve_threads(args)
    machine = machine_info()
    machine.update(cpu_features())

    import faiss

    faiss.omp_set_num_threads(threads)
    machine.update({"faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
                    "faiss_blas": _faiss_blas()})
    rng = np.random.default_rng(0)
    c_np = _normalised(rng, args.corpus, args.dim, args.shared_direction)
    q_np = _normalised(rng, args.queries, args.dim, args.shared_direction)
    choices = _Choices()
    auto_log = logging.getLogger(AUTO_LOGGER)
    auto_log.addHandler(choices)
    auto_log.setLevel(logging.DEBUG)
    c_t, q_t = torch.from_numpy(c_np), torch.from_numpy(q_np)
    plan = plan_search(args.queries, "cpu", args.chunk_size, args.query_block, args.k)
    index = faiss.IndexFlatIP(args.dim)
    index.add(c_np)
    kw = {"chunk_size": args.chunk_size, "query_block": args.query_block}
    results: dict[str, object] = {}

    def keep(name, fn):
        def run():
            results[name] = fn()
        return run

    f32 = {**kw, "precision": "float32"}
    contenders = {
        "exact_default": keep("exact_default", lambda: exact_topk(q_t, c_t, args.k, **kw)),
        "exact_float32": keep("exact_float32", lambda: exact_topk(q_t, c_t, args.k, **f32)),
        "exact_bf16_rescore": keep("exact_bf16_rescore",
                                   lambda: exact_topk(q_t, c_t, args.k, precision="bf16-rescore", **kw)),
        "exact_float32_torch_blas": with_blas("torch", lambda: exact_topk(q_t, c_t, args.k, **f32)),
        "exact_float32_numpy_blas": with_blas("numpy", lambda: exact_topk(q_t, c_t, args.k, **f32)),
        "bare_matmuls": lambda: bare_split_matmuls(q_t, c_t, threads, args.chunk_size, args.query_block, args.k),
        "bare_matmuls_numpy": lambda: bare_split_matmuls(q_t, c_t, threads, args.chunk_size, args.query_block,
                                                         args.k, blas="numpy"),
        "bare_matmuls_torch_threads": lambda: bare_matmuls(q_t, c_t, plan.chunk_size, plan.query_block),
        "bare_bf16_matmuls": lambda: bare_split_matmuls(q_t, c_t, threads, args.chunk_size, args.query_block, args.k,
                                                        torch.bfloat16),
        "faiss_flatip": keep("faiss_flatip", lambda: index.search(q_np, args.k)),
    }
    timings = interleave(contenders, args.rounds, warmup=1)
    wall, cpu = timings.wall, timings.cpu
    # the stricter float32 baseline: whichever way of doing only the matmuls was faster (by median)
    bare = min(("bare_matmuls", "bare_matmuls_numpy", "bare_matmuls_torch_threads"),
               key=lambda n: stats(wall[n])["median"])
    ratio = {
        "default_over_faiss": paired_ratio(wall["exact_default"], wall["faiss_flatip"]),
        "default_over_bare": paired_ratio(wall["exact_default"], wall[bare]),
        "default_over_exact_float32": paired_ratio(wall["exact_default"], wall["exact_float32"]),
        "exact_over_bare": paired_ratio(wall["exact_float32"], wall[bare]),
        "exact_over_faiss": paired_ratio(wall["exact_float32"], wall["faiss_flatip"]),
        "exact_torch_blas_over_faiss": paired_ratio(wall["exact_float32_torch_blas"], wall["faiss_flatip"]),
        "exact_numpy_blas_over_faiss": paired_ratio(wall["exact_float32_numpy_blas"], wall["faiss_flatip"]),
        "exact_torch_blas_over_bare": paired_ratio(wall["exact_float32_torch_blas"], wall[bare]),
        "exact_numpy_blas_over_bare": paired_ratio(wall["exact_float32_numpy_blas"], wall[bare]),
        "bare_numpy_over_bare_torch": paired_ratio(wall["bare_matmuls_numpy"], wall["bare_matmuls"]),
        "bf16_over_faiss": paired_ratio(wall["exact_bf16_rescore"], wall["faiss_flatip"]),
        "bf16_over_bare_bf16": paired_ratio(wall["exact_bf16_rescore"], wall["bare_bf16_matmuls"]),
        "bf16_over_exact_float32": paired_ratio(wall["exact_bf16_rescore"], wall["exact_float32"]),
        "bare_over_faiss": paired_ratio(wall[bare], wall["faiss_flatip"]),
        "bare_bf16_over_bare": paired_ratio(wall["bare_bf16_matmuls"], wall[bare]),
        "exact_over_bare_cpu_time": paired_ratio(cpu["exact_float32"], cpu[bare]),
    }
    v32, i32 = (x.numpy() for x in results["exact_float32"])
    v16, i16 = (x.numpy() for x in results["exact_bf16_rescore"])
    va, ia = (x.numpy() for x in results["exact_default"])
    faiss_s, faiss_i = results["faiss_flatip"]
    topk_check = check_identical(q_np, c_np, i32, faiss_i)
    topk_check["max_score_diff_vs_faiss"] = float(np.abs(np.sort(v32, 1) - np.sort(faiss_s, 1)).max())
    bf16_check = {"rows_differing_from_float32": int((i16 != i32).any(axis=1).sum()),
                  "scores_bit_identical": bool(np.array_equal(v16, v32)),
                  "vs_faiss": check_identical(q_np, c_np, i16, faiss_i)}
    default_check = {"auto_chose": sorted(choices.seen),
                     "rows_differing_from_float32": int((ia != i32).any(axis=1).sum()),
                     "scores_bit_identical": bool(np.array_equal(va, v32))}
    ratios = {name: r["median_of_ratios"] for name, r in ratio.items()}
    ratios["bare_baseline"] = bare
    ratios["detail"] = ratio
    targets = {
        "default_over_faiss<=0.9": ratios["default_over_faiss"] <= 0.9,
        "default_over_bare<=1.05": ratios["default_over_bare"] <= 1.05,
        "float32_over_bare<=1.05": ratios["exact_over_bare"] <= 1.05,
        "default_identical_to_float32": default_check["rows_differing_from_float32"] == 0
        and default_check["scores_bit_identical"],
        "identical_topk_to_faiss(float64 ties only)": topk_check["rows_unexplained"] == 0,
        "bf16_identical_to_float32": bf16_check["rows_differing_from_float32"] == 0 and bf16_check["scores_bit_identical"],
    }
    config = {"corpus": args.corpus, "queries": args.queries, "dim": args.dim, "k": args.k, "threads": threads,
              "chunk_size": plan.chunk_size, "query_block": plan.query_block, "rounds": args.rounds,
              "split": "corpus chunks round-robin over the threads, all queries per thread",
              "embeddings": "float32, unit-norm Gaussian (numpy seed 0)"
              + (f", shared direction weight {args.shared_direction}" if args.shared_direction else ""),
              "env": {v: os.environ[v] for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE",
                                                 "OPENBLAS_L2_SIZE", ENV_VAR) if os.environ.get(v)}}
    figures = {"seconds": {name: stats(t) for name, t in wall.items()},
               "cpu_seconds": {name: stats(t) for name, t in cpu.items()}}
    record = make_record("search", quick=args.quick, config=config, figures=figures, ratios=ratios,
                         targets=targets, machine=machine)
    record["topk_check"] = topk_check
    record["bf16_check"] = bf16_check
    record["default_check"] = default_check
    med = {name: stats(t)["median"] for name, t in wall.items()}
    report(record, {
        "cpu": f"{machine['cpu']}; flags {' '.join(machine['flags'])}; torch capability "
               f"{machine['torch_cpu_capability']}; bf16 units {machine['bf16_units']}",
        "blas": f"torch {machine['torch_blas']}, numpy {machine['numpy_blas']}, faiss {machine['faiss_blas']}; "
                f"search float32 tiles on {machine['search_blas']} ({ENV_VAR}={machine['search_blas_env'] or 'unset'})",
        "median seconds": ", ".join(f"{n} {s:.3f}" for n, s in med.items()),
        "default (auto) / faiss": f"{ratios['default_over_faiss']:.3f} (chose {', '.join(sorted(choices.seen)) or '-'}"
                                  f" tiles; / float32 tiles {ratios['default_over_exact_float32']:.3f})",
        "default (auto) / bare float32 matmuls": f"{ratios['default_over_bare']:.3f} (baseline {bare})",
        "exact float32 / bare matmuls": f"{ratios['exact_over_bare']:.3f} (baseline {bare})",
        "exact float32 / faiss": f"{ratios['exact_over_faiss']:.3f} (torch BLAS forced "
                                 f"{ratios['exact_torch_blas_over_faiss']:.3f}, numpy BLAS forced "
                                 f"{ratios['exact_numpy_blas_over_faiss']:.3f})",
        "bare numpy / bare torch matmuls": f"{ratios['bare_numpy_over_bare_torch']:.3f}",
        "bf16-rescore / faiss": f"{ratios['bf16_over_faiss']:.3f}",
        "bf16-rescore / bare bf16 matmuls": f"{ratios['bf16_over_bare_bf16']:.3f}",
        "bare float32 matmuls / faiss": f"{ratios['bare_over_faiss']:.3f}",
        "top-k vs faiss": f"{topk_check['rows_differing']} rows differ, {topk_check['rows_unexplained']} unexplained",
        "bf16 vs float32": f"{bf16_check['rows_differing_from_float32']} rows differ, scores bit-identical "
                           f"{bf16_check['scores_bit_identical']}",
        "default vs float32": f"{default_check['rows_differing_from_float32']} rows differ, scores bit-identical "
                              f"{default_check['scores_bit_identical']}",
    })
    if not args.no_write:
        write_record(record, args.out)


if __name__ == "__main__":
    main()
