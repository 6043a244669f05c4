"""EncodeOptions (one owner of the encoding keywords) and parse_ks (one parser of the cut-offs k)."""

from __future__ import annotations

import pytest

from gcl_hf.retrieval.options import EncodeOptions, parse_ks


def test_parse_ks_takes_an_int_a_sequence_or_a_comma_list():
    assert parse_ks(5) == (5,)
    assert parse_ks((1, 5, 10)) == (1, 5, 10)
    assert parse_ks("1, 5,10,") == (1, 5, 10)
    for bad in ("", "1,x", 0, (3, -1), ()):
        with pytest.raises(ValueError, match="expected positive integers"):
            parse_ks(bad)
    with pytest.raises(ValueError, match=r"retrieval_k='0'"):
        parse_ks("0", "retrieval_k")


def test_encode_options_validate_and_resolve_overrides():
    base = EncodeOptions(batch_size=8, num_workers=2)
    assert EncodeOptions.resolve(base) is base
    got = EncodeOptions.resolve(base, batch_size=4, cache_dir="/tmp/c")
    assert (got.batch_size, got.num_workers, got.cache_dir) == (4, 2, "/tmp/c")
    assert got.dataset_kwargs()["batch_size"] == 4 and "cache_dir" not in got.dataset_kwargs()
    with pytest.raises(TypeError, match=r"unknown encoding option\(s\) \['batch'\]"):
        EncodeOptions.resolve(None, batch=4)
    for field, value in (("batch_size", 0), ("shard_size", -1), ("num_workers", -1), ("batch_size", True)):
        with pytest.raises(ValueError, match=field):
            EncodeOptions(**{field: value})
