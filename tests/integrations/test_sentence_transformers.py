"""sentence-transformers (the real package) loads saved GCL models and gives GCLModel.encode's vectors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sentence_transformers import SentenceTransformer

from gcl_hf import GCLModel
from gcl_hf.hub.publish import save_for_hub
from gcl_hf.integrations.sentence_transformers import encode_fused, sentence_transformers_files
from gcl_hf.testing import tiny_clip, tiny_processor, tiny_siglip

TEXTS = ["a red square on a blue field", "two dogs", "a very long caption " * 8]
ATOL = 1e-5


def _images(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (24 + 4 * i, 30, 3), dtype=np.uint8)) for i in range(n)]


def _model(make=tiny_clip, fusion="sum", **backbone_kwargs) -> GCLModel:
    model = GCLModel.from_backbone(make(**backbone_kwargs), fusion=fusion).eval()
    if model.fusion_head is not None:  # a trained-looking head: "mlp" must not fall back to "sum"
        torch.manual_seed(2)
        torch.nn.init.normal_(model.fusion_head.fc2.weight, std=0.5)
    model.processor = tiny_processor()
    return model


def _check(st: SentenceTransformer, model: GCLModel, *, fused: bool) -> None:
    images = _images()
    np.testing.assert_allclose(st.encode(TEXTS), model.encode(TEXTS), atol=ATOL, rtol=0)
    np.testing.assert_allclose(st.encode(images), model.encode(images), atol=ATOL, rtol=0)
    items = [{"image": image, "text": text} for image, text in zip(images, TEXTS)]
    expected = model.encode(items)
    assert not np.allclose(expected, model.encode(images), atol=1e-3)  # fused rows are their own vectors
    if fused:
        np.testing.assert_allclose(st.encode(items), expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(encode_fused(st, items, fusion=model.config.fusion), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("make,fusion,kwargs", [
    (tiny_clip, "sum", {"hidden": 48, "projection_dim": 24}),
    (tiny_clip, "mlp", {}),
    (tiny_siglip, "mean", {}),
])
def test_full_form_loads_with_sentence_transformers(tmp_path, make, fusion, kwargs):
    model = _model(make, fusion, **kwargs)
    model.save_pretrained(tmp_path / "full")
    st = SentenceTransformer(str(tmp_path / "full"), device="cpu")
    assert type(st[0].model).__name__ == "GCLModel" and len(st) == 1
    assert set(st.modalities) == {"text", "image", ("image", "text")}
    _check(st, model, fused=True)
    if make is tiny_clip:  # ST reads the size from the backbone's projection_dim (SigLIP has none: see the report)
        assert st.get_embedding_dimension() == model.embedding_dim


@pytest.mark.parametrize("make", [tiny_clip, tiny_siglip])
def test_backbone_form_is_plain_sentence_transformers(tmp_path, make):
    model = _model(make)
    model.save_backbone(tmp_path / "backbone")
    st = SentenceTransformer(str(tmp_path / "backbone"), device="cpu")
    assert [type(m).__name__ for m in st] == ["Transformer", "Normalize"]
    assert type(st[0].model).__name__ == type(model.backbone).__name__
    _check(st, model, fused=False)
    assert st.get_embedding_dimension() == model.embedding_dim
    with pytest.raises(ValueError, match="cannot combine them in a single input"):  # ST's own refusal
        st.encode([{"image": _images(1)[0], "text": "a dog"}])


def test_hub_forms_written_by_save_for_hub_load(tmp_path):
    model = _model()
    for form in ("full", "backbone"):
        out = save_for_hub(model, tmp_path / form, repo_id=f"me/{form}", form=form)
        st = SentenceTransformer(str(out), device="cpu")
        np.testing.assert_allclose(st.encode(TEXTS[:2]), model.encode(TEXTS[:2]), atol=ATOL, rtol=0)
        assert "sentence-transformers" in (out / "README.md").read_text()
    config = json.loads((tmp_path / "full" / "config_sentence_transformers.json").read_text())
    assert "gcl-hf" in config["requirements"]  # ST names the missing package instead of a bare config error
    with pytest.raises(ValueError, match="form='adapter'"):
        sentence_transformers_files(model, form="adapter")


def test_backbone_form_needs_no_gcl_hf(tmp_path):
    """A fresh interpreter that never imports gcl_hf loads the backbone form and gets the same text vectors."""
    model = _model()
    model.save_backbone(tmp_path / "backbone")
    np.save(tmp_path / "expected.npy", model.encode(TEXTS))
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer({str(tmp_path / "backbone")!r}, device="cpu")
        got = st.encode({TEXTS!r})
        assert "gcl_hf" not in sys.modules, "gcl_hf was imported"
        np.testing.assert_allclose(got, np.load({str(tmp_path / "expected.npy")!r}), atol={ATOL}, rtol=0)
        print("ok")
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False,
                            cwd=Path(tmp_path), timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


@pytest.mark.parametrize("form", ["full", "backbone"])
def test_the_card_snippets_run(tmp_path, monkeypatch, form):
    """The card's Python blocks, run as written against the saved directory (its path as the repo id)."""
    import re

    model = _model()
    out = save_for_hub(model, tmp_path / form, repo_id=str(tmp_path / form), form=form)
    blocks = re.findall(r"```python\n(.*?)```", (out / "README.md").read_text(), flags=re.DOTALL)
    st_block = next(b for b in blocks if "SentenceTransformer(" in b)
    monkeypatch.chdir(tmp_path)
    _images(1)[0].save(tmp_path / "dog.jpg")
    scope: dict = {}
    exec(compile(st_block, "card", "exec"), scope)  # noqa: S102 - our own generated snippet
    item = {"image": Image.open(tmp_path / "dog.jpg"), "text": "a dog"}
    np.testing.assert_allclose(scope["fused"], model.encode([item]), atol=ATOL, rtol=0)
    np.testing.assert_allclose(scope["texts"], model.encode(["a photo of a dog"]), atol=ATOL, rtol=0)
    if form == "full":
        load_block = next(b for b in blocks if "AutoModel.from_pretrained(" in b)
        exec(compile(load_block, "card", "exec"), scope)  # noqa: S102
        np.testing.assert_allclose(scope["embeddings"][2], model.encode([item])[0], atol=ATOL, rtol=0)


def test_saving_without_a_processor_warns_that_st_could_not_tokenize(tmp_path, caplog):
    """A model saved without its processor used to load in sentence-transformers through an empty vocabulary."""
    import logging

    model = GCLModel.from_backbone(tiny_clip()).eval()  # no processor attached
    with caplog.at_level(logging.WARNING, logger="gcl_hf.modeling.st_format"):
        model.save_pretrained(tmp_path / "bare")
    assert "bare: saved without a tokenizer (no tokenizer.json, vocab.json, vocab.txt)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gcl_hf.modeling.st_format"):
        _model().save_pretrained(tmp_path / "full")  # processor attached: saved beside, no warning
    assert "saved without a tokenizer" not in caplog.text
