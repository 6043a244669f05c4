"""A folder of image+text documents -> `gcl-hf encode` -> an index on disk -> `gcl-hf search` by text, image
or both; the same index as `GCLIndex.build`."""

import json
from pathlib import Path

import numpy as np
import pytest

from gcl_hf import GCLModel, cli
from gcl_hf.retrieval.index import GCLIndex
from gcl_hf.testing import tiny_clip, tiny_processor
from tests.retrieval.test_index import CAPTIONS, write_documents  # the same document folder as the GCLIndex tests


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    docs = write_documents(root / "docs")
    return root, docs, _saved_model(root / "model")


def _saved_model(directory: Path) -> GCLModel:
    """A tiny GCLModel saved with its processor in ``directory``."""
    model = GCLModel.from_backbone(tiny_clip(seed=0)).eval()
    model.save_pretrained(directory)
    tiny_processor().save_pretrained(directory)
    return model


def _index_dir(root: Path, capsys) -> Path:
    assert cli.main(["encode", "--model", str(root / "model"), "--pool", str(root / "docs"), "--cache_dir",
                     str(root / "emb"), "--quiet", "--batch-size", "3", "--output", str(root / "enc.json")]) == 0
    out = capsys.readouterr().out
    assert "query it with gcl-hf search --index" in out
    summary = json.loads((root / "enc.json").read_text())
    (entry,) = summary["datasets"].values()
    return Path(entry["directory"])


def _search(capsys, *argv: str) -> list[list[str]]:
    assert cli.main(["search", *argv]) == 0
    return [line.split() for line in capsys.readouterr().out.splitlines()]


def test_encode_folder_then_search(encoded, capsys):
    root, docs, model = encoded
    index_dir = _index_dir(root, capsys)
    assert {"gcl_index.json", "documents", "meta.json"} <= {p.name for p in index_dir.iterdir()}
    for i in (1, 3, 5):
        lines = _search(capsys, "--index", str(index_dir), "--text", CAPTIONS[i], "--image",
                        str(docs / ("sub" if i % 3 == 0 else "") / f"doc{i}.png"), "-k", "4")
        doc = f"sub/doc{i}" if i % 3 == 0 else f"doc{i}"
        assert [line[0] for line in lines] == ["1", "2", "3", "4"]
        assert lines[0][2] == doc and float(lines[0][1]) == pytest.approx(1.0, abs=1e-4)
        assert " ".join(lines[0][3:]) == CAPTIONS[i]  # the document's text is shown
    assert _search(capsys, "--index", str(index_dir), "--image", str(docs / "photo.jpg"), "--top_k", "1")[0][2] == \
        "photo"
    assert _search(capsys, "--index", str(index_dir), "--text", "a note with words only", "-k", "1")[0][2] == "note"
    # the encode directory is the same index GCLIndex.build makes in memory
    built = GCLIndex.build(model, tiny_processor(), docs, show_progress=False)
    loaded = GCLIndex.load(index_dir)
    assert loaded.ids == built.ids
    np.testing.assert_allclose(loaded.embeddings.to_numpy(), built.embeddings, atol=1e-6)
    assert loaded.info.model == str((root / "model").resolve())


def test_search_json_and_faiss(encoded, capsys):
    root, docs, _ = encoded
    index_dir = _index_dir(root, capsys)
    argv = ["--index", str(index_dir), "--text", CAPTIONS[2], "--image", str(docs / "doc2.png"), "-k", "5", "--json"]
    assert cli.main(["search", *argv]) == 0
    exact = json.loads(capsys.readouterr().out)
    assert cli.main(["search", *argv, "--search-backend", "faiss"]) == 0
    flat = json.loads(capsys.readouterr().out)
    assert exact["ids"][0] == "doc2" and exact["ids"] == flat["ids"]
    np.testing.assert_allclose(exact["scores"], flat["scores"], atol=1e-5)
    assert cli.main(["search", *argv, "--backend", "faiss"]) == 0  # the 0.1 spelling still works
    assert json.loads(capsys.readouterr().out)["ids"] == flat["ids"]


def _shown_flags(parser) -> set[str]:
    import argparse

    return {s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


def test_one_search_backend_vocabulary_and_one_meaning_per_flag():
    """The search backend was `--index` in eval and `--backend` in search (where `--index` is the index directory),
    and `--backend` in encode was torch.distributed's: each flag now means one thing."""
    from gcl_hf.cli import encode, eval as eval_cli, search
    from gcl_hf.cli.common import SEARCH_BACKEND_CHOICES
    from gcl_hf.retrieval.search import SEARCH_BACKENDS

    assert tuple(SEARCH_BACKEND_CHOICES) == SEARCH_BACKENDS
    for module in (eval_cli, search):
        shown = _shown_flags(module.build_parser())
        assert "--search-backend" in shown and "--backend" not in shown
    assert "--index" not in _shown_flags(eval_cli.build_parser())
    enc = _shown_flags(encode.build_parser())
    assert "--dist-backend" in enc and "--backend" not in enc


def test_search_refuses_another_model(encoded, tmp_path, capsys):
    root, _, _ = encoded
    index_dir = _index_dir(root, capsys)
    other = tmp_path / "other"
    GCLModel.from_backbone(tiny_clip(seed=1)).save_pretrained(other)
    tiny_processor().save_pretrained(other)
    assert cli.main(["search", "--index", str(index_dir), "--text", "boat", "--model", str(other)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "encoded with another model" in err[0]
    assert cli.main(["search", "--index", str(index_dir), "--image", str(tmp_path / "missing.png")]) == 1
    assert "--image: file not found" in capsys.readouterr().err


def test_a_replaced_image_is_re_encoded_and_search_serves_its_new_vector(tmp_path, capsys):
    """``gcl-hf encode`` used to key images by path: a picture replaced under its name stayed "all cached"."""
    from PIL import Image

    _saved_model(tmp_path / "model")
    docs = tmp_path / "docs"
    docs.mkdir()
    rng = np.random.default_rng(3)
    for name in ("red", "blue", "green"):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(docs / f"{name}.png")
    argv = ["encode", "--model", str(tmp_path / "model"), "--pool", str(docs), "--cache-dir", str(tmp_path / "emb"),
            "--quiet", "--shard-size", "1"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert cli.main(argv) == 0 and "all cached" in capsys.readouterr().out
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(docs / "red.png")  # another picture
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "encoded 1 rows" in out  # only the changed file's shard
    index_dir = first.split("query it with gcl-hf search --index ")[1].split(")")[0]
    assert index_dir in out  # the same index directory, now up to date
    lines = _search(capsys, "--index", index_dir, "--image", str(docs / "red.png"), "-k", "1")
    assert lines[0][2] == "red" and float(lines[0][1]) == pytest.approx(1.0, abs=1e-4)


def test_control_characters_in_documents_are_escaped_when_printed(tmp_path, capsys):
    _saved_model(tmp_path / "model")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "evil.txt").write_text("red \x1b]0;pwned\x07 boat \x1b[2J")
    (docs / "plain.txt").write_text("a blue door")
    assert cli.main(["encode", "--model", str(tmp_path / "model"), "--pool", str(docs), "--cache-dir",
                     str(tmp_path / "emb"), "--quiet"]) == 0
    index_dir = capsys.readouterr().out.split("query it with gcl-hf search --index ")[1].split(")")[0]
    assert cli.main(["search", "--index", index_dir, "--text", "red boat", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "red \\x1b]0;pwned\\x07 boat \\x1b[2J" in out


def _one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"{prog}: error: ")
    return lines[0]


def test_an_index_whose_processor_is_gone_is_one_line_that_says_pass_processor(tmp_path, capsys):
    """The index records the processor it was encoded with; when that cannot be loaded, `gcl-hf search` says so
    in one line naming what it tried and the flag that fixes it (exit status 1), not a traceback."""
    import shutil

    model = GCLModel.from_backbone(tiny_clip(seed=0)).eval()
    model.save_pretrained(tmp_path / "model")  # no processor beside the model: the index records --processor's
    for name in ("proc", "copy"):
        tiny_processor().save_pretrained(tmp_path / name)
    docs = write_documents(tmp_path / "docs", n=2)
    assert cli.main(["encode", "--model", str(tmp_path / "model"), "--processor", str(tmp_path / "proc"), "--pool",
                     str(docs), "--cache-dir", str(tmp_path / "emb"), "--quiet"]) == 0
    index_dir = capsys.readouterr().out.split("query it with gcl-hf search --index ")[1].split(")")[0]
    shutil.rmtree(tmp_path / "proc")
    assert cli.main(["search", "--index", index_dir, "--text", "boat"]) == 1
    line = _one_error_line(capsys, "gcl-hf search")
    assert f"no processor found for the index {index_dir!r}; pass --processor (tried {tmp_path / 'proc'}: " in line
    assert _search(capsys, "--index", index_dir, "--text", "boat", "-k", "1", "--processor", str(tmp_path / "copy"))
    assert cli.main(["search", "--index", index_dir, "--text", "boat", "--processor", str(tmp_path / "model")]) == 1
    assert f"--processor {tmp_path / 'model'}: " in _one_error_line(capsys, "gcl-hf search")


def test_known_failures_of_encode_and_search_are_one_line(encoded, tmp_path, capsys):
    root = encoded[0]
    (tmp_path / "empty.jsonl").write_text("\n")
    assert cli.main(["encode", "--model", str(root / "model"), "--pool", str(tmp_path / "empty.jsonl"),
                     "--cache-dir", str(tmp_path / "c")]) == 1
    assert "empty.jsonl: the pool file is empty (no rows)" in _one_error_line(capsys, "gcl-hf encode")
    (tmp_path / "dup.jsonl").write_text('{"id": "a", "modality": "text", "text": "x"}\n'
                                        '{"id": "a", "modality": "text", "text": "y"}\n')
    assert cli.main(["encode", "--model", str(root / "model"), "--pool", str(tmp_path / "dup.jsonl"),
                     "--cache-dir", str(tmp_path / "c")]) == 1
    assert "dup.jsonl: rows 0 and 1 have the same id 'a'" in _one_error_line(capsys, "gcl-hf encode")
    bad = tmp_path / "latin1"
    bad.mkdir()
    (bad / "a.txt").write_bytes(b"caf\xe9")
    assert cli.main(["encode", "--model", str(root / "model"), "--pool", str(bad), "--cache-dir",
                     str(tmp_path / "c")]) == 1
    assert "latin1/a.txt: not valid UTF-8: byte 0xe9 at byte offset 3" in _one_error_line(capsys, "gcl-hf encode")
    index_dir = _index_dir(root, capsys)
    copy = tmp_path / "idx"
    import shutil

    shutil.copytree(index_dir, copy)
    info = json.loads((copy / "gcl_index.json").read_text())
    for content, expected in ((json.dumps({k: v for k, v in info.items() if k != "dim"}), "missing field 'dim'"),
                              ("[]", "expected a JSON object, got a list"), ("{", "unreadable (JSONDecodeError")):
        (copy / "gcl_index.json").write_text(content)
        assert cli.main(["search", "--index", str(copy), "--text", "boat"]) == 1
        line = _one_error_line(capsys, "gcl-hf search")
        assert f"{copy / 'gcl_index.json'}: {expected}" in line
