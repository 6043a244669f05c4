"""The embedding cache never reuses a shard that changed on disk.

Each shard ``shard_NNNNN.npy`` has a sidecar ``shard_NNNNN.json`` (sha256 of the file, its rows, ids, shape and
dtype) written after it; a cache edited in place (bytes flipped, rows permuted, NaNs written, file truncated, two
shards swapped, metadata deleted or corrupt) is detected on the next call and the affected shards re-encoded.
"""

from __future__ import annotations

import hashlib
import json
import logging

import datasets
import numpy as np
import pytest
import torch

from gcl_hf.benchmarks.task import RetrievalTask
from gcl_hf.retrieval.embedding_cache import (
    EmbeddingCacheError,
    encode_corpus,
    load_cached,
)
from gcl_hf.retrieval.encoding import EncodingError, encode_dataset
from gcl_hf.retrieval.evaluation import evaluate_retrieval
from gcl_hf.testing import tiny_processor

WORDS = ["red", "blue", "green", "old", "small", "dark", "long", "white", "snowy", "yellow"]
N, SHARD = 20, 8  # shards of 8, 8 and 4 rows



@pytest.fixture(scope="module")
def corpus():
    rows = [{"id": f"c{i}", "text": f"a {WORDS[i % 10]} {WORDS[(3 * i) % 10]} thing {i}", "image": None,
             "modality": "text"} for i in range(N)]
    return datasets.Dataset.from_list(rows)


@pytest.fixture(scope="module")
def reference(model, processor, corpus):
    return encode_dataset(model, processor, corpus, batch_size=8, show_progress=False).numpy()


def _encode(model, processor, corpus, cache_dir, **kw):
    return encode_corpus(model, processor, corpus, cache_dir=cache_dir, batch_size=8, shard_size=SHARD,
                         show_progress=False, **kw)


# ---------------------------------------------------------------------------------------------- tampering
def _rewrite(path, edit):
    """Edit a shard's array in place (same file name; the sidecar is left as it was)."""
    array = np.load(path)
    np.save(path, edit(array.copy()))


def flip_bytes(directory):
    path = directory / "shard_00001.npy"
    data = bytearray(path.read_bytes())
    data[-17] ^= 0xFF  # one byte inside the last row's data
    path.write_bytes(bytes(data))
    return ["shard_00001.npy"]


def permute_rows(directory):
    _rewrite(directory / "shard_00001.npy", lambda a: a[[1, 0, *range(2, len(a))]])
    return ["shard_00001.npy"]


def nan_rows(directory):
    def poison(a):
        a[3] = np.nan
        return a

    _rewrite(directory / "shard_00001.npy", poison)
    return ["shard_00001.npy"]


def truncate(directory):
    path = directory / "shard_00002.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return ["shard_00002.npy"]


def swap_shards(directory):
    """Swap shards 0 and 1 together with their sidecars: each file still matches its own checksum."""
    for suffix in (".npy", ".json"):
        a, b = directory / f"shard_00000{suffix}", directory / f"shard_00001{suffix}"
        tmp = directory / f"swap{suffix}"
        a.rename(tmp)
        b.rename(a)
        tmp.rename(b)
    return ["shard_00000.npy", "shard_00001.npy"]


def float64_same_shape(directory):
    _rewrite(directory / "shard_00000.npy", lambda a: a.astype(np.float64))
    return ["shard_00000.npy"]


TAMPERING = [flip_bytes, permute_rows, nan_rows, truncate, swap_shards, float64_same_shape]


@pytest.mark.parametrize("tamper", TAMPERING, ids=lambda f: f.__name__)
def test_a_tampered_shard_is_detected_and_re_encoded(model, processor, corpus, reference, tmp_path, caplog, tamper):
    first = _encode(model, processor, corpus, tmp_path)
    assert first.encoded_rows == N and first.complete
    touched = tamper(first.directory)
    with caplog.at_level(logging.WARNING, logger="gcl_hf.retrieval.embedding_cache"):
        again = _encode(model, processor, corpus, tmp_path)
    rows = {"shard_00000.npy": 8, "shard_00001.npy": 8, "shard_00002.npy": 4}
    assert again.encoded_rows == sum(rows[name] for name in touched)  # only the tampered shards
    np.testing.assert_allclose(again.to_numpy(), reference, rtol=1e-5, atol=1e-6)
    for name in touched:
        assert name in caplog.text, caplog.text  # the warning names the shard it re-encodes
    # and the cache is sound again: nothing re-encoded on the next call
    assert _encode(model, processor, corpus, tmp_path).encoded_rows == 0


@pytest.mark.parametrize("tamper", TAMPERING, ids=lambda f: f.__name__)
def test_load_cached_leaves_out_tampered_shards_and_says_why(model, processor, corpus, tmp_path, tamper):
    first = _encode(model, processor, corpus, tmp_path)
    touched = tamper(first.directory)
    loaded = load_cached(first.directory)
    assert not loaded.complete and sorted(loaded.missing) == sorted(touched)
    assert set(loaded.problems) == set(touched) and all(loaded.problems.values())


def test_swapped_shards_are_named_by_their_rows(model, processor, corpus, tmp_path):
    first = _encode(model, processor, corpus, tmp_path)
    swap_shards(first.directory)
    problems = load_cached(first.directory).problems
    assert "rows 8-15" in problems["shard_00000.npy"] and "rows 0-7" in problems["shard_00000.npy"]


def test_shard_of_other_ids_is_re_encoded(model, processor, corpus, reference, tmp_path, caplog):
    """A shard whose sidecar (and checksum) is intact but whose ids are not the dataset's rows (e.g. copied from
    another cache of the same layout) is not reused."""
    first = _encode(model, processor, corpus, tmp_path)
    sidecar = first.directory / "shard_00001.json"
    meta = json.loads(sidecar.read_text())
    meta["ids"] = [f"x{i}" for i in range(len(meta["ids"]))]
    sidecar.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="gcl_hf.retrieval.embedding_cache"):
        again = _encode(model, processor, corpus, tmp_path)
    assert again.encoded_rows == 8 and "ids" in caplog.text and "'x0'" in caplog.text
    np.testing.assert_allclose(again.to_numpy(), reference, rtol=1e-5, atol=1e-6)


def test_nan_with_a_matching_checksum_is_caught_at_read(model, processor, corpus, reference, tmp_path):
    """Even a shard whose sidecar was rewritten to match (an older writer, a hand edit) is checked row by row."""
    first = _encode(model, processor, corpus, tmp_path)
    path = first.directory / "shard_00001.npy"
    nan_rows(first.directory)
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    sidecar.write_text(json.dumps(meta))
    problem = load_cached(first.directory).problems["shard_00001.npy"]
    assert "row 11" in problem and "'c11'" in problem and "not finite" in problem
    again = _encode(model, processor, corpus, tmp_path)
    assert again.encoded_rows == 8
    np.testing.assert_allclose(again.to_numpy(), reference, rtol=1e-5, atol=1e-6)


def test_non_finite_embeddings_are_never_written(model, processor, corpus, tmp_path):
    calls = {"n": 0}

    def poison_second_batch(module, args, output):
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch of 8: rows 8..15 (shard 1); position 3 is row 11
            output = output.clone()
            output[3] = float("nan")
        return output

    handle = model.backbone.text_projection.register_forward_hook(poison_second_batch)
    try:
        with pytest.raises(EncodingError) as info:
            _encode(model, processor, corpus, tmp_path)
    finally:
        handle.remove()
    message = str(info.value)
    assert "shard_00001.npy" in message and "row 11" in message and "'c11'" in message and "not finite" in message
    directory = next(tmp_path.iterdir())
    assert not (directory / "shard_00001.npy").exists() and not (directory / "shard_00001.json").exists()
    assert (directory / "shard_00000.npy").exists()  # the finite shard before it was kept


def test_deleted_meta_is_rebuilt_and_shards_still_verified(model, processor, corpus, reference, tmp_path, caplog):
    first = _encode(model, processor, corpus, tmp_path)
    (first.directory / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="meta.json"):
        load_cached(first.directory)
    with caplog.at_level(logging.WARNING, logger="gcl_hf.retrieval.embedding_cache"):
        again = _encode(model, processor, corpus, tmp_path)
    assert "meta.json" in caplog.text and str(first.directory) in caplog.text
    assert again.encoded_rows == 0  # every shard checked against its own sidecar and the dataset's ids
    np.testing.assert_allclose(again.to_numpy(), reference, rtol=1e-5, atol=1e-6)


def test_corrupt_meta_names_its_path_and_is_rebuilt(model, processor, corpus, reference, tmp_path, caplog):
    first = _encode(model, processor, corpus, tmp_path)
    meta = first.directory / "meta.json"
    meta.write_text('{"version": 2, "num_rows": ')
    with pytest.raises(EmbeddingCacheError, match=str(meta)):
        load_cached(first.directory)
    with caplog.at_level(logging.WARNING, logger="gcl_hf.retrieval.embedding_cache"):
        again = _encode(model, processor, corpus, tmp_path)
    assert str(meta) in caplog.text and again.encoded_rows == 0
    np.testing.assert_allclose(again.to_numpy(), reference, rtol=1e-5, atol=1e-6)
    assert json.loads(meta.read_text())["num_rows"] == N


def test_evaluation_through_a_tampered_cache_matches_no_cache(model, processor, corpus, tmp_path):
    """The reported symptom: `gcl-hf eval --cache-dir` after a shard changed on disk gave recall@1 0.0."""
    queries = datasets.Dataset.from_list([{"id": f"q{i}", "text": corpus[i]["text"], "image": None,
                                           "modality": "text"} for i in range(0, N, 3)])
    task = RetrievalTask("toy", queries, corpus, {f"q{i}": {f"c{i}"} for i in range(0, N, 3)})
    plain = evaluate_retrieval(model, processor, task, batch_size=8, show_progress=False)
    assert plain["recall@1"] > 0.5  # the query text equals its target's text
    evaluate_retrieval(model, processor, task, batch_size=8, show_progress=False, cache_dir=tmp_path)
    for directory in tmp_path.iterdir():  # corrupt every cached shard (corpus and queries)
        for shard in directory.glob("shard_*.npy"):
            _rewrite(shard, lambda a: np.roll(a, 1, axis=0))
    cached = evaluate_retrieval(model, processor, task, batch_size=8, show_progress=False, cache_dir=tmp_path)
    assert cached == pytest.approx(plain)


def test_sidecar_records_checksum_ids_and_shape(model, processor, corpus, tmp_path):
    first = _encode(model, processor, corpus, tmp_path)
    path = first.directory / "shard_00002.npy"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["ids"] == [f"c{i}" for i in range(16, 20)]
    assert (meta["start"], meta["stop"], meta["dtype"]) == (16, 20, "float32")
    assert meta["shape"] == [4, model.embedding_dim]
    assert torch.isfinite(first.to_tensor()).all()


def test_the_key_does_not_change_when_the_processor_is_used(model, corpus):
    """The tokenizer backend records each call's truncation/padding: that state must not change the key, or a
    second call in the same process misses the cache."""
    from gcl_hf.retrieval.embedding_cache import cache_key

    fresh = tiny_processor()
    before = cache_key(model, fresh, corpus)
    fresh(text=["a red thing"], padding="max_length", truncation=True, max_length=7, return_tensors="pt")
    assert cache_key(model, fresh, corpus) == before


def test_a_replaced_image_file_re_encodes_only_its_shard(model, tmp_path):
    """Image *paths* used to be the key: a picture replaced under its name was served from the cache."""
    from PIL import Image

    rng = np.random.default_rng(5)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    pool = datasets.Dataset.from_list([{"id": f"p{i}", "text": None, "image": f"{i}.png", "modality": "image"}
                                       for i in range(6)])
    kwargs = dict(cache_dir=tmp_path / "cache", image_root=str(tmp_path), shard_size=2, show_progress=False)
    first = encode_corpus(model, tiny_processor(), pool, **kwargs)
    assert first.encoded_rows == 6 and encode_corpus(model, tiny_processor(), pool, **kwargs).encoded_rows == 0
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(tmp_path / "3.png")
    again = encode_corpus(model, tiny_processor(), pool, **kwargs)
    assert again.directory == first.directory and again.encoded_rows == 2  # rows 2-3: the shard of 3.png
    fresh = encode_dataset(model, tiny_processor(), pool, image_root=str(tmp_path), show_progress=False)
    np.testing.assert_allclose(again.to_numpy(), fresh.numpy(), atol=1e-6)
    assert not np.allclose(again.to_numpy()[3], first.to_numpy()[3], atol=1e-3)


# ---------------------------------------------------------------------------------------------- options
def test_options_object_and_keywords_encode_the_same(model, processor, corpus, reference, tmp_path):
    from gcl_hf.retrieval.options import EncodeOptions

    options = EncodeOptions(cache_dir=tmp_path / "a", batch_size=8, shard_size=SHARD, show_progress=False)
    through_options = encode_corpus(model, processor, corpus, options)
    through_keywords = _encode(model, processor, corpus, tmp_path / "b")
    assert through_options.encoded_rows == through_keywords.encoded_rows == N  # both encoded, none read back
    assert through_options.directory.parent == tmp_path / "a"
    assert through_options.directory.name == through_keywords.directory.name  # the cache fingerprint
    np.testing.assert_array_equal(through_options.to_numpy(), through_keywords.to_numpy())
    np.testing.assert_allclose(through_options.to_numpy(), reference, rtol=1e-5, atol=1e-5)


def test_options_and_overrides_combine(model, processor, corpus, tmp_path):
    from gcl_hf.retrieval.options import EncodeOptions

    options = EncodeOptions(cache_dir=tmp_path, batch_size=8, shard_size=SHARD, show_progress=False)
    got = encode_corpus(model, processor, corpus, options, shard_size=5, processor_kwargs={"max_length": 16})
    meta = json.loads((got.directory / "meta.json").read_text())
    assert got.directory.parent == tmp_path and meta["shard_size"] == 5 and len(got.shards) == 4
    assert got.directory.name != _encode(model, processor, corpus, tmp_path).directory.name  # processor_kwargs keyed
    assert options.shard_size == SHARD  # the caller's options are not changed


def test_unknown_keyword_or_missing_cache_dir_is_one_clear_error(model, processor, corpus, tmp_path):
    from gcl_hf.retrieval.distributed_encoding import encode_corpus_distributed

    for encode in (encode_corpus, encode_corpus_distributed):
        with pytest.raises(TypeError, match=r"unknown encoding option\(s\) \['batchsize'\]: EncodeOptions has .*"
                                            r"'batch_size'"):
            encode(model, processor, corpus, cache_dir=tmp_path, batchsize=8)
        with pytest.raises(ValueError, match=rf"^{encode.__name__} needs a cache_dir [^\n]*$"):
            encode(model, processor, corpus, batch_size=8)
    assert not any(tmp_path.iterdir())  # nothing written before the error
