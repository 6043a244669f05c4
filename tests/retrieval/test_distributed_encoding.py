"""Pool encoding at scale: two real processes (torchrun, gloo on CPU) fill the embedding cache with what one
process computes; a lost shard is re-encoded alone; `gcl-hf encode` end to end.

The pool mixes images (PNG files), texts and fused items, interleaved, with a shard size that gives
both processes several shards (shard ``n`` goes to process ``n % 2``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_fixtures import write_mbeir
from PIL import Image

from gcl_hf import GCLModel, hub
from gcl_hf.cli.encode import load_pool_file
from gcl_hf.cli.encode import main as encode_main
from gcl_hf.retrieval.encoding import encode_dataset
from gcl_hf.testing import tiny_clip, tiny_processor

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "scripts" / "encode_dist_check.py"
ROWS_PER_MODALITY = 8  # 24 rows
SHARD_SIZE = 5  # shards 0..4 (last one 4 rows): rank 0 encodes 0, 2, 4 (14 rows), rank 1 encodes 1, 3 (10 rows)
BATCH_SIZE = 4
TOL = 1e-5


def _write_pool(directory: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3 * ROWS_PER_MODALITY):
        modality = ("image", "text", "image,text")[i % 3]
        row = {"id": f"item-{i}", "text": None, "image": None, "modality": modality}
        if "image" in modality:
            rel = f"images/{i:03d}.png"
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(directory / rel)
            row["image"] = rel
        if "text" in modality:
            row["text"] = f"item {i}: a {('red', 'green', 'blue')[i % 3]} thing " + "x" * (i % 5)
        rows.append(row)
    path = directory / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A saved tiny GCLModel + processor, the pool file, and the one-process reference embeddings."""
    base = tmp_path_factory.mktemp("encode")
    torch.manual_seed(0)
    model_dir = base / "model"
    GCLModel.from_backbone(tiny_clip()).save_pretrained(model_dir)
    tiny_processor().save_pretrained(model_dir)
    pool = _write_pool(base / "pool")
    from transformers import AutoProcessor

    dataset = load_pool_file(pool, cache_dir=base / "data_cache")
    reference = encode_dataset(hub.load(model_dir), AutoProcessor.from_pretrained(model_dir), dataset,
                               image_root=str(pool.parent), batch_size=BATCH_SIZE, show_progress=False).numpy()
    assert reference.shape == (3 * ROWS_PER_MODALITY, 32)
    return {"base": base, "model": model_dir, "pool": pool, "reference": reference}


@pytest.fixture(scope="module")
def two_processes(setup):
    """One torchrun launch, two CPU processes (gloo): the library call, the CLI, then a disagreement."""
    out = setup["base"] / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT), str(out),
           "--model", str(setup["model"]), "--pool", str(setup["pool"]),
           "--shard-size", str(SHARD_SIZE), "--batch-size", str(BATCH_SIZE)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out


def _cached(directory: Path) -> np.ndarray:
    return np.concatenate([np.load(p) for p in sorted(directory.glob("shard_*.npy"))])


def test_two_processes_equal_one_process(setup, two_processes):
    ranks = [json.loads((two_processes / f"lib_rank{r}.json").read_text()) for r in range(2)]
    for r, got in enumerate(ranks):
        assert got["rank"] == r and got["world_size"] == 2 and got["num_processes"] == 2
        # every process encoded its own shards, and nothing twice
        assert got["encoded_rows"] == [14, 10]
        assert got["num_rows"] == 24 and got["shape"] == [24, 32]
    # after the barrier both processes see the same, complete embeddings
    assert ranks[0]["digest"] == ranks[1]["digest"] and ranks[0]["fingerprint"] == ranks[1]["fingerprint"]
    directory = Path(ranks[0]["directory"])
    assert directory.name == ranks[0]["fingerprint"] and len(list(directory.glob("shard_*.npy"))) == 5
    diff = float(np.abs(_cached(directory) - setup["reference"]).max())
    print(f"2 processes vs 1-process encode_dataset: max |diff| = {diff:.3g}")
    assert diff < TOL

    cli = json.loads((two_processes / "cli.json").read_text())
    assert cli["num_processes"] == 2
    (entry,) = cli["datasets"].values()
    assert entry["encoded_rows"] == [14, 10] and entry["fingerprint"] == ranks[0]["fingerprint"]
    assert np.abs(_cached(Path(entry["directory"])) - setup["reference"]).max() < TOL


def test_processes_that_disagree_all_fail(two_processes):
    for r in range(2):
        message = (two_processes / f"mismatch_rank{r}.txt").read_text()
        assert "different cache fingerprints" in message and "rank 0" in message and "rank 1" in message


def test_lost_shard_is_reencoded_alone(setup, two_processes, tmp_path, capsys):
    """A crash that lost shard 1 (written by rank 1): a one-process re-run encodes only that shard."""
    cache = tmp_path / "cache"
    entry = next(iter(json.loads((two_processes / "cli.json").read_text())["datasets"].values()))
    shutil.copytree(Path(entry["directory"]), cache / entry["fingerprint"])
    directory = cache / entry["fingerprint"]
    lost = directory / "shard_00001.npy"
    before = np.load(lost)
    lost.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in directory.glob("shard_*.npy")}
    assert len(kept) == 4

    out = tmp_path / "resume.json"
    assert encode_main(["--model", str(setup["model"]), "--pool", str(setup["pool"]), "--cache-dir", str(cache),
                        "--data-cache", str(setup["base"] / "data_cache"), "--shard-size", str(SHARD_SIZE),
                        "--batch-size", str(BATCH_SIZE), "--output", str(out), "--quiet"]) == 0
    (resumed,) = json.loads(out.read_text())["datasets"].values()
    assert resumed["encoded_rows"] == [SHARD_SIZE] and resumed["fingerprint"] == entry["fingerprint"]
    assert {p.name: p.stat().st_mtime_ns for p in directory.glob("shard_*.npy") if p.name in kept} == kept
    assert np.abs(np.load(lost) - before).max() < TOL
    assert np.abs(_cached(directory) - setup["reference"]).max() < TOL
    assert f"encoded {SHARD_SIZE} rows on 1 process" in capsys.readouterr().out


def test_cli_one_process_end_to_end(setup, tmp_path, capsys):
    args = ["--model", str(setup["model"]), "--pool", str(setup["pool"]), "--cache-dir", str(tmp_path / "cache"),
            "--data-cache", str(setup["base"] / "data_cache"), "--shard-size", str(SHARD_SIZE),
            "--batch-size", str(BATCH_SIZE), "--output", str(tmp_path / "out.json"), "--quiet"]
    assert encode_main(args) == 0
    (entry,) = json.loads((tmp_path / "out.json").read_text())["datasets"].values()
    assert entry["num_processes"] == 1 and entry["encoded_rows"] == [24] and entry["rows_per_second"] > 0
    directory = Path(entry["directory"])
    assert directory.parent == tmp_path / "cache" and directory.name == entry["fingerprint"]
    assert np.abs(_cached(directory) - setup["reference"]).max() < TOL
    printed = capsys.readouterr().out
    assert entry["fingerprint"] in printed and "rows/s" in printed
    # the same command again reads the cache
    assert encode_main(args) == 0
    (again,) = json.loads((tmp_path / "out.json").read_text())["datasets"].values()
    assert again["encoded_rows"] == [0] and again["fingerprint"] == entry["fingerprint"]
    assert "all cached" in capsys.readouterr().out


def test_cli_benchmark_pools_and_queries(setup, tmp_path):
    from transformers import AutoProcessor

    from gcl_hf.benchmarks import load_benchmark

    root = tmp_path / "mbeir"
    write_mbeir(root, tasks=("mscoco_task3", "webqa_task2"))
    out = tmp_path / "out.json"
    base = ["--model", str(setup["model"]), "--benchmark", "mbeir", "--root", str(root), "--cache-dir",
            str(tmp_path / "cache"), "--option", f"cache_dir={json.dumps(str(tmp_path / 'arrow'))}",
            "--batch-size", "3", "--shard-size", "2", "--output", str(out), "--quiet"]
    assert encode_main(base + ["--which", "both"]) == 0
    encoded = json.loads(out.read_text())["datasets"]
    tasks = load_benchmark("mbeir", root, cache_dir=tmp_path / "arrow")
    assert set(encoded) == {Path(t.meta["corpus_file"]).stem for t in tasks} | {f"{t.name}/queries" for t in tasks}
    model, processor = hub.load(setup["model"]), AutoProcessor.from_pretrained(setup["model"])
    for task in tasks:
        for part, name in ((task.corpus, Path(task.meta["corpus_file"]).stem), (task.queries, f"{task.name}/queries")):
            want = encode_dataset(model, processor, part, image_root=task.image_root, batch_size=3,
                                  show_progress=False).numpy()
            assert np.abs(_cached(Path(encoded[name]["directory"])) - want).max() < TOL, name

    # the global pool is one Dataset shared by every task: encoded once
    assert encode_main(base + ["--option", 'pool="global"']) == 0
    (name,) = json.loads(out.read_text())["datasets"]
    assert name == "mbeir_union_test_cand_pool"


def test_pool_file_errors_name_the_file_and_field(setup, tmp_path):
    bad = tmp_path / "no_modality.jsonl"
    bad.write_text(json.dumps({"id": "a", "text": "hello"}) + "\n")
    common = ["--model", str(setup["model"]), "--cache-dir", str(tmp_path / "cache"), "--data-cache",
              str(tmp_path / "data_cache"), "--quiet"]
    with pytest.raises(SystemExit, match=r"no_modality\.jsonl: missing column 'modality'"):
        encode_main(common + ["--pool", str(bad)])
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text("".join(json.dumps({"id": f"r{i}", "text": "t", "modality": m}) + "\n"
                               for i, m in enumerate(["text", "audio"])))
    with pytest.raises(SystemExit, match=r"unknown: row 1 \(id 'r1'\), field 'modality': unknown modality 'audio'"):
        encode_main(common + ["--pool", str(unknown)])
    with pytest.raises(SystemExit, match="pool file not found"):
        encode_main(common + ["--pool", str(tmp_path / "missing.jsonl")])


def test_one_process_without_a_launcher():
    # the launchers' environments are accelerate's PartialState's business; the 2-process runs above use it
    from gcl_hf.retrieval.distributed_encoding import ProcessInfo, process_device, process_info

    assert process_info() == ProcessInfo(0, 1, 0) and process_info().is_main
    assert process_device("cpu", local_rank=1) == torch.device("cpu")


def test_shards_cover_every_row_once_and_one_process_encodes_all(setup):
    from transformers import AutoProcessor

    from gcl_hf.retrieval.distributed_encoding import encode_dataset_sharded, shard_rows

    for rows, world in ((11, 2), (3, 4), (0, 2), (24, 3)):
        shards = [shard_rows(rows, r, world) for r in range(world)]
        assert [i for s in shards for i in s] == list(range(rows))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    dataset = load_pool_file(setup["pool"], cache_dir=setup["base"] / "data_cache")
    alone = encode_dataset_sharded(hub.load(setup["model"]), AutoProcessor.from_pretrained(setup["model"]), dataset,
                                   batch_size=BATCH_SIZE, image_root=str(setup["pool"].parent), show_progress=False)
    assert alone.encoded_rows == [len(dataset)]
    np.testing.assert_allclose(alone.embeddings.numpy(), setup["reference"], rtol=TOL, atol=TOL)


def test_two_processes_shard_in_memory_encoding_and_both_get_every_row(setup, two_processes):
    for rank in range(2):
        got = np.load(two_processes / f"sharded_rank{rank}.npy")
        meta = json.loads((two_processes / f"sharded_rank{rank}.json").read_text())
        assert meta["encoded_rows"] == [12, 12]  # 24 rows: rank 0 the first 12, rank 1 the rest
        np.testing.assert_allclose(got, setup["reference"], rtol=TOL, atol=TOL)


def test_one_process_run_through_options_equals_keywords(setup, tmp_path):
    from transformers import AutoProcessor

    from gcl_hf.retrieval.distributed_encoding import encode_corpus_distributed
    from gcl_hf.retrieval.options import EncodeOptions

    model, processor = hub.load(setup["model"]), AutoProcessor.from_pretrained(setup["model"])
    dataset = load_pool_file(setup["pool"], cache_dir=setup["base"] / "data_cache")
    image_root = str(setup["pool"].parent)
    options = EncodeOptions(cache_dir=tmp_path / "a", batch_size=BATCH_SIZE, shard_size=SHARD_SIZE,
                            show_progress=False)
    through_options = encode_corpus_distributed(model, processor, dataset, options, image_root=image_root)
    through_keywords = encode_corpus_distributed(model, processor, dataset, cache_dir=tmp_path / "b",
                                                 image_root=image_root, batch_size=BATCH_SIZE,
                                                 shard_size=SHARD_SIZE, show_progress=False)
    assert through_options.encoded_rows == through_keywords.encoded_rows == [len(dataset)]
    assert through_options.fingerprint == through_keywords.fingerprint
    assert through_options.directory.parent == tmp_path / "a" and len(through_options.embeddings.shards) == 5
    np.testing.assert_array_equal(through_options.embeddings.to_numpy(), through_keywords.embeddings.to_numpy())
    np.testing.assert_allclose(through_options.embeddings.to_numpy(), setup["reference"], rtol=TOL, atol=TOL)


def test_distributed_session_leaves_a_callers_group_up(tmp_path):
    import torch.distributed as dist

    from gcl_hf.retrieval.distributed_encoding import ProcessInfo, barrier, distributed_session

    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        with distributed_session() as info:
            assert info == ProcessInfo(0, 1, 0)
            barrier()
        assert dist.is_initialized()  # the caller's group: not this session's to end
    finally:
        dist.destroy_process_group()


def test_cli_builds_one_encode_options_from_its_flags(tmp_path):
    from gcl_hf.cli.encode import encode_options, parse_args
    from gcl_hf.retrieval.options import EncodeOptions

    args = parse_args(["--model", "m", "--pool", "p.jsonl", "--cache-dir", str(tmp_path), "--batch-size", "3",
                       "--num-workers", "2", "--shard-size", "7", "--quiet"])
    assert encode_options(args, "cpu") == EncodeOptions(batch_size=3, num_workers=2, device="cpu",
                                                        cache_dir=str(tmp_path), shard_size=7, show_progress=False)
