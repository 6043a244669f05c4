"""The CPU search engine: a streaming first pass over ``[query block, corpus chunk]`` tiles keeps a shortlist
that provably holds the top-k, then the shortlist is rescored canonically.

For every tile entry ``a`` the tile precision's bound (:class:`~gcl_hf.retrieval.search.rescore.TileBound`:
float32, bf16, or float64 whose own scores are the result) gives an interval ``[a - E, a + E]`` around the
canonical score. ``Lambda``, a query's k-th largest lower end, is a lower bound of its canonical k-th
score (k entries are at least that high), so an entry whose upper end stays below ``Lambda`` cannot be in
the top-k. The scan keeps every entry whose upper end reaches the running ``Lambda`` (which only grows),
and at the end the entries whose upper end reaches the final ``Lambda`` are rescored canonically (float64
tiles: kept as they are) and the top-k taken by (score desc, index asc): the exact canonical top-k,
whatever the tile precision or the BLAS that multiplied the tiles (:mod:`~gcl_hf.retrieval.search.blas`).

Work: the corpus chunks are shared round-robin between Python threads with single-threaded ops (no OpenMP
barrier per small op; each chunk is read, converted and its norm bounded once); every thread scores all
queries against its chunks. ``Lambda`` is shared: any thread's value is a valid lower bound. A tile's
candidates are found in one pass over it (:func:`candidates`), a maximum over groups of 128 columns (for
bf16 tiles on the bits read as int16, exact for positive thresholds), then a comparison inside the groups
that reach the threshold. A query whose shortlist outgrows the cap is searched again with float32 tiles.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from gcl_hf.retrieval.search.blas import MatmulBackend, matmul_into
from gcl_hf.retrieval.search.inputs import (
    Array,
    ChunkSpec,
    chunk_specs,
    load_chunk,
    pairs_in,
    pairs_of_subset,
    torch_threads,
)
from gcl_hf.retrieval.search.rescore import (
    BF16_BOUND,
    FLOAT32_BOUND,
    TileBound,
    canonical_scores,
    max_row_norm,
    topk_of_pairs,
)

#: Candidates kept per query at most on the bf16 pass; beyond, the query is searched with float32 tiles.
DEFAULT_SHORTLIST_CAP = 4096
# precision="auto" (auto_topk): the trial's size, when it runs, and its verdict. Break-even measured on a
# Zen 4 EPYC (200k x 512, 2k queries, k=10): bf16 tiles at 0.52-0.75x float32's time up to ~160 entries
# rescored per query (0.0008 N), 1.9x when a tenth of the queries overflowed a 4096 cap.
AUTO_SAMPLE = 64
AUTO_MIN_QUERIES = 256
AUTO_MIN_ROWS = 16384
AUTO_SHORTLIST_SHARE = 1 / 1000
AUTO_TRIAL_CAP_SHARE = 1 / 250
SUPER_BLOCK = 8192  # queries per pass over the corpus (bounds the shortlist memory)
GROUP = 128  # columns per group in the candidate scan
# Tile sizes (elements of the [query block, chunk] score buffer). On CPU a tile that stays in the
# last-level cache lets the candidate scan read hot data; on a GPU large tiles keep the SMs busy.
_CPU_TILE = 1024 * 2048
_CPU_CHUNK = 2048
_GPU_TILE = 64 * 1024 * 1024
_GPU_CHUNK = 65536


@dataclass(frozen=True)
class SearchPlan:
    """How the search tiles the work: ``query_block`` queries x ``chunk_size`` corpus rows."""

    chunk_size: int
    query_block: int


@dataclass
class PassStats:
    """What :func:`shortlist_topk` did, when it is given one: queries searched, shortlist entries rescored
    canonically, queries whose shortlist outgrew the cap (searched again with float32 tiles unless
    ``redo=False``)."""

    queries: int = 0
    rescored: int = 0
    overflowed: int = 0


def plan_search(num_queries: int, device: torch.device | str = "cpu", chunk_size: int | None = None,
                query_block: int | None = None, k: int = 1) -> SearchPlan:
    """The tiling of :func:`~gcl_hf.retrieval.search.exact_topk` (benchmarks run the same matmuls bare)."""
    on_cpu = torch.device(device).type == "cpu"
    if chunk_size is None:
        chunk_size = _CPU_CHUNK if on_cpu else _GPU_CHUNK
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk_size = max(int(chunk_size), k + 1)
    if query_block is None:
        query_block = max(1, (_CPU_TILE if on_cpu else _GPU_TILE) // chunk_size)
    return SearchPlan(chunk_size, max(1, min(int(query_block), max(num_queries, 1))))


class _Shortlist:
    """One thread's candidates for a block of queries.

    ``low`` holds, per query, the ``k`` largest lower ends among the candidates seen (its last column is
    the thread's ``Lambda``); ``lam`` is shared by the threads and holds the largest ``Lambda`` any of
    them has reached. The candidates (row, upper end, index) are appended flat; ``low`` and ``lam`` are
    raised with them once about one candidate per query has come in since the last time (a ``Lambda``
    a few tiles old is still a valid bound: it only lets a few more entries through), and the list is
    filtered against ``lam`` whenever it has grown enough since the last filtering (no sort). A query
    with more than ``cap`` candidates gets ``lam = +inf`` (nothing more is collected for it) and goes
    to the float32 search.
    """

    def __init__(self, lam: torch.Tensor, k: int, cap: int | None, lock: threading.Lock) -> None:
        self.lam, self.k, self.cap, self.lock = lam, k, cap, lock
        self.low = torch.full((lam.numel(), k), -math.inf, dtype=torch.float64)
        self.parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.lows: list[tuple[torch.Tensor, torch.Tensor]] = []  # (rows, lower ends) not yet in ``low``
        self.unsynced = 0
        self.version = 0  # counts the syncs (a block's cached threshold is from one of them)
        self.sync_every = max(256, lam.numel())
        self.pending = 0
        self.budget = max(1 << 16, 4 * lam.numel() * k)
        self.overflow = torch.zeros(lam.numel(), dtype=torch.bool)

    def add(self, rows: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, index: torch.Tensor) -> None:
        """Append candidates; raise ``low`` / ``lam`` with them when enough have come in."""
        self.parts.append((rows, upper, index))
        self.lows.append((rows, lower))
        self.unsynced += rows.numel()
        self.pending += rows.numel()
        if self.unsynced >= self.sync_every:
            self.sync()
        if self.pending > self.budget:
            self.prune()

    def sync(self) -> None:
        """Merge the lower ends that came in since the last call into ``low`` and raise ``lam``."""
        if not self.lows:
            return
        self.version += 1
        rows, lower = self.lows[0]
        if len(self.lows) > 1:  # each tile's rows are in order; several tiles' are not
            rows, lower = (torch.cat(p) for p in zip(*self.lows))
            order = torch.argsort(rows, stable=True)
            rows, lower = rows[order], lower[order]
        self.lows, self.unsynced = [], 0
        uniq, counts = torch.unique_consecutive(rows, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        group = torch.repeat_interleave(torch.arange(uniq.numel()), counts)
        slot = torch.arange(rows.numel()) - starts[group]
        merged = torch.full((uniq.numel(), self.k + int(counts.max())), -math.inf, dtype=torch.float64)
        merged[:, : self.k] = self.low[uniq]
        merged[group, self.k + slot] = lower
        top = torch.topk(merged, self.k, dim=1).values
        self.low[uniq] = top
        with self.lock:  # read-modify-write of the shared bound: never lower another thread's value
            self.lam[uniq] = torch.maximum(self.lam[uniq], top[:, -1])

    def prune(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.sync()
        if not self.parts:
            empty = torch.empty(0, dtype=torch.int64)
            return empty, torch.empty(0, dtype=torch.float64), empty
        rows, upper, index = (torch.cat(p) for p in zip(*self.parts))
        keep = upper >= self.lam[rows]
        if self.cap is not None:
            over = torch.bincount(rows[keep], minlength=self.lam.numel()) > self.cap
            if bool(over.any()):
                self.overflow |= over
                with self.lock:
                    self.lam[over] = math.inf  # stop collecting for these queries: they go to float32
                self.version += 1  # a cached threshold must see it
                keep &= ~over[rows]
        kept = (rows[keep], upper[keep], index[keep])
        self.parts, self.pending = [kept], 0
        self.budget = max(self.budget, 2 * kept[0].numel())
        return kept


def candidates(scores: torch.Tensor, thresh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(row, column)`` of the tile entries ``>= thresh`` (per row), in row-major order: the group scan."""
    rows, width = scores.shape
    if width % GROUP:
        return (scores >= thresh.unsqueeze(1)).nonzero(as_tuple=True)
    limit = thresh
    if scores.dtype == torch.bfloat16:
        bits = thresh.view(torch.int16)
        if not bool((bits > 0).all()):
            return (scores >= thresh.unsqueeze(1)).nonzero(as_tuple=True)
        # For a threshold > +0, bf16 order agrees with the int16 order of the bits (negative numbers,
        # -0 and -inf have negative bits), and an integer max is much cheaper than a bf16 one.
        scores, limit = scores.view(torch.int16), bits
    groups = width // GROUP
    grouped = scores.view(rows * groups, GROUP)
    hit = (grouped.amax(dim=1).view(rows, groups) >= limit.unsqueeze(1)).view(-1).nonzero().squeeze(1)
    if hit.numel() == 0:
        return hit, hit
    hit_r = hit.div(groups, rounding_mode="floor")
    inner_h, inner_c = (grouped.index_select(0, hit) >= limit.index_select(0, hit_r).unsqueeze(1)).nonzero(
        as_tuple=True)
    return hit_r.index_select(0, inner_h), (hit - hit_r * groups).index_select(0, inner_h) * GROUP + inner_c


@dataclass
class _Pass:
    """One pass of a block of queries over the corpus, shared by the threads (each scans its own chunks)."""

    bound: TileBound
    q_tile: torch.Tensor
    alpha: torch.Tensor
    q_norm: torch.Tensor
    shards: list[Array]
    specs: list[ChunkSpec]
    k: int
    query_block: int
    pairs: torch.Tensor | None
    threads: int
    blas_threads: int
    matmul: MatmulBackend
    bar: Any

    @torch.inference_mode()
    def scan(self, t: int, shortlist: _Shortlist) -> tuple[torch.Tensor, ...]:
        """Thread ``t``: score all queries of the block against chunks ``t, t + threads, ...``."""
        with torch_threads(1 if self.threads > 1 else self.blas_threads):
            return self._scan(t, shortlist)

    def _scan(self, t: int, shortlist: _Shortlist) -> tuple[torch.Tensor, ...]:
        bound, k, pairs, query_block = self.bound, self.k, self.pairs, self.query_block
        num_q, dim = self.q_tile.shape
        lam = shortlist.lam
        mine = self.specs[t::self.threads]
        width_max = max((s.stop - s.start for s in mine), default=0)
        source = torch.float64 if bound.dtype == torch.float64 else torch.float32
        convert = bound.dtype != source
        chunk_t = torch.empty((width_max, dim), dtype=bound.dtype) if convert else None
        buffer = torch.empty(min(query_block, num_q) * width_max, dtype=bound.dtype)
        matmul = self.matmul if bound.dtype == torch.float32 else "torch"
        ex_cols = pairs[:, 1].contiguous() if pairs is not None else None
        cold_blocks = set(range(0, num_q, query_block))  # blocks that may still have a query at -inf
        # The bound's fixed part uses the largest chunk norm seen so far (a larger norm only widens E), so it
        # and each block's threshold change only when that norm grows or this thread raised Lambda (a
        # threshold from an older Lambda is still valid: another thread's raise is picked up later).
        norm_max, fixed, thresholds = 0.0, None, {}
        for spec in mine:
            chunk = load_chunk(self.shards, spec, torch.device("cpu"), source)
            width, offset = chunk.shape[0], spec.offset
            norm = 0.0 if bound.exact else max_row_norm(chunk)
            if fixed is None or norm > norm_max:
                norm_max = max(norm, norm_max)
                fixed = bound.fixed(self.alpha, self.q_norm, norm_max, dim)
                thresholds.clear()
            if convert:
                chunk = chunk_t[:width].copy_(chunk)
            ex = None
            if ex_cols is not None:
                lo, hi = int(torch.searchsorted(ex_cols, offset)), int(torch.searchsorted(ex_cols, offset + width))
                ex = pairs[lo:hi] if hi > lo else None
            for qs in range(0, num_q, query_block):
                qe = min(qs + query_block, num_q)
                scores = buffer[: (qe - qs) * width].view(qe - qs, width)
                matmul_into(self.q_tile[qs:qe], chunk, scores, matmul)
                if ex is not None and (sel := pairs_in(ex, qs, qe)) is not None:
                    scores[sel[:, 0], sel[:, 1] - offset] = -math.inf
                fixed_b = fixed[qs:qe]
                cached = thresholds.get(qs)
                if cached is not None and cached[0] == shortlist.version:
                    lam_b, thresh = cached[1], cached[2]
                else:
                    lam_b = lam[qs:qe].clone()
                    if qs in cold_blocks and width >= k:  # no bound yet: the k-th lower end among this
                        cold = torch.isneginf(lam_b).nonzero().squeeze(1)  # tile's entries is one
                        if cold.numel():
                            sample = scores.index_select(0, cold)
                            a_k = torch.topk(sample if bound.dtype != torch.bfloat16 else sample.float(), k,
                                             dim=1).values[:, k - 1]
                            lam_b[cold] = a_k.double() - bound.error_from(a_k, fixed_b[cold])
                        if not bool(torch.isneginf(lam_b).any()):
                            cold_blocks.discard(qs)  # Lambda only grows
                    thresh = bound.threshold_from(lam_b, fixed_b)
                    if qs not in cold_blocks:
                        thresholds[qs] = (shortlist.version, lam_b, thresh)
                r, col = candidates(scores, thresh)
                if r.numel():
                    approx = scores.view(-1).index_select(0, r * width + col).double()
                    err = bound.error_from(approx, fixed_b[r])
                    if bound.relative:  # drop what the bf16 floor of the threshold let through
                        keep = approx + err >= lam_b[r]
                        r, col, approx, err = r[keep], col[keep], approx[keep], err[keep]
                    shortlist.add(r + qs, approx - err, approx + err, col + offset)
            if self.bar is not None:
                self.bar.update(width)
        return shortlist.prune()


@torch.inference_mode()
def shortlist_topk(queries: torch.Tensor, shards: list[Array], k: int, bound: TileBound = FLOAT32_BOUND, *,
                   chunk_size: int | None = None, query_block: int | None = None,
                   pairs: torch.Tensor | None = None, threads: int = 1, cap: int | None = None, bar: Any = None,
                   blas_threads: int | None = None, matmul: MatmulBackend = "torch",
                   stats: PassStats | None = None, redo: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (scores, indices) of CPU ``queries`` (float32, or float64 with ``FLOAT64_TILES``) through
    a first pass in ``bound``'s precision (see the module doc). ``cap`` bounds each query's shortlist (None:
    no bound); a query over it is searched again with float32 tiles (``redo=False``: left at -inf / -1, for
    a trial run). Runs best under ``torch.set_num_threads(1)``; ``blas_threads`` is what the matmuls use
    when ``threads`` is 1; ``matmul`` the resolved backend of float32 tiles; ``stats`` is filled in."""
    num_q, dim = queries.shape
    if cap is not None and cap < k:
        raise ValueError(f"shortlist_cap must be >= k ({k}), got {cap}")
    plan = plan_search(min(num_q, SUPER_BLOCK), "cpu", chunk_size, query_block, k)
    specs = chunk_specs(shards, plan.chunk_size, dim)
    threads = max(1, min(threads, len(specs)))
    blas_threads = blas_threads or torch.get_num_threads()
    q_tile, alpha, q_norm = bound.terms(queries)
    band_rows, band_cols, band_scores, fallback = [], [], [], []
    for s0 in range(0, num_q, SUPER_BLOCK):
        s1 = min(s0 + SUPER_BLOCK, num_q)
        lam = torch.full((s1 - s0,), -math.inf, dtype=torch.float64)
        lock = threading.Lock()
        lists = [_Shortlist(lam, k, cap, lock) for _ in range(threads)]
        run = _Pass(bound, q_tile[s0:s1], alpha[s0:s1], q_norm[s0:s1], shards, specs, k, plan.query_block,
                    pairs_in(pairs, s0, s1), threads, blas_threads, matmul, bar)
        if threads == 1:
            parts = [run.scan(0, lists[0])]
        else:
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="exact_topk") as pool:
                parts = list(pool.map(run.scan, range(threads), lists))
        rows, upper, index = (torch.cat(p) for p in zip(*parts))
        # Lambda: the k-th largest lower end over all entries (each thread's k largest are in its `low`).
        final = torch.topk(torch.cat([sl.low for sl in lists], dim=1), k, dim=1).values[:, k - 1]
        overflow = torch.stack([sl.overflow for sl in lists]).any(0)
        band = upper >= final[rows]
        if cap is not None:
            overflow |= torch.bincount(rows[band], minlength=s1 - s0) > cap
        band &= ~overflow[rows]
        band_rows.append(rows[band] + s0)
        band_cols.append(index[band])
        band_scores.append(upper[band])  # exact tiles: upper end = the tile score
        fallback.append(overflow.nonzero().squeeze(1) + s0)
    rows, cols = torch.cat(band_rows), torch.cat(band_cols)
    scores = torch.cat(band_scores) if bound.exact else canonical_scores(queries, shards, rows, cols, threads)
    vals, idx = topk_of_pairs(rows, cols, scores, num_q, k)
    over = torch.cat(fallback)
    if stats is not None:
        stats.queries += num_q
        stats.rescored += rows.numel()
        stats.overflowed += over.numel()
    if redo and over.numel():  # shortlists over the cap: float32 tiles, no cap
        v, i = shortlist_topk(queries.index_select(0, over), shards, k, FLOAT32_BOUND, chunk_size=chunk_size,
                              query_block=query_block, pairs=pairs_of_subset(pairs, over, num_q), threads=threads,
                              bar=None, blas_threads=blas_threads, matmul=matmul)
        vals[over], idx[over] = v, i
    return vals, idx


@torch.inference_mode()
def auto_topk(queries: torch.Tensor, shards: list[Array], k: int, *, chunk_size: int | None = None,
              query_block: int | None = None, pairs: torch.Tensor | None = None, threads: int = 1,
              cap: int | None = None, bar: Any = None, blas_threads: int | None = None,
              matmul: MatmulBackend = "torch") -> tuple[torch.Tensor, torch.Tensor, str]:
    """:func:`shortlist_topk` with the tiles that pay for these inputs: ``(scores, indices, "bf16" | "float32")``.

    bf16 tiles halve the matmuls but are only worth it while the shortlists stay short: their bound is
    about 0.005 wide, so embeddings whose scores crowd together (a shared direction, near-duplicates)
    make every query rescore thousands of entries and search again with float32 tiles, several times
    slower than float32 tiles alone. So a trial: the bf16 pass for :data:`AUTO_SAMPLE` evenly spaced
    queries (a cap of ``N *`` :data:`AUTO_TRIAL_CAP_SHARE`); bf16 tiles for the rest when at most 1 in 32
    of them outgrew it and the others rescored at most ``N *`` :data:`AUTO_SHORTLIST_SHARE` entries each,
    float32 tiles otherwise. The trial's results are kept (they are the canonical top-k like any other),
    so it costs only its own pass over the corpus when it decides for float32. Fewer than
    :data:`AUTO_MIN_QUERIES` queries or :data:`AUTO_MIN_ROWS` rows: float32 tiles, no trial."""
    num_q = queries.shape[0]
    total = sum(int(s.shape[0]) for s in shards)
    common = {"chunk_size": chunk_size, "query_block": query_block, "threads": threads,
              "blas_threads": blas_threads, "matmul": matmul}
    if num_q < AUTO_MIN_QUERIES or total < AUTO_MIN_ROWS:
        vals, idx = shortlist_topk(queries, shards, k, FLOAT32_BOUND, pairs=pairs, bar=bar, **common)
        return vals, idx, "float32"
    sample = torch.linspace(0, num_q - 1, AUTO_SAMPLE).round().long().unique()
    trial = PassStats()
    v, i = shortlist_topk(queries.index_select(0, sample), shards, k, BF16_BOUND, cap=max(k, int(total * AUTO_TRIAL_CAP_SHARE)),
                          pairs=pairs_of_subset(pairs, sample, num_q), stats=trial, redo=False, **common)
    done = trial.queries - trial.overflowed
    use_bf16 = trial.overflowed * 32 <= trial.queries and trial.rescored <= done * total * AUTO_SHORTLIST_SHARE
    solved = i[:, 0] >= 0  # an overflowed query was left at -1 (redo=False)
    left = torch.ones(num_q, dtype=torch.bool)
    left[sample[solved]] = False
    rest = left.nonzero().squeeze(1)
    vals = torch.full((num_q, k), -math.inf, dtype=v.dtype)
    idx = torch.full((num_q, k), -1, dtype=torch.int64)
    vals[sample[solved]], idx[sample[solved]] = v[solved], i[solved]
    if rest.numel():
        bound = BF16_BOUND if use_bf16 else FLOAT32_BOUND
        v, i = shortlist_topk(queries.index_select(0, rest), shards, k, bound, pairs=pairs_of_subset(pairs, rest, num_q),
                              cap=(cap or DEFAULT_SHORTLIST_CAP) if use_bf16 else None, bar=bar, **common)
        vals[rest], idx[rest] = v, i
    return vals, idx, "bf16" if use_bf16 else "float32"
