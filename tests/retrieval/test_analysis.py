"""Modality gap metrics and the PCA plot on synthetic embeddings with a known gap."""

import math

import numpy as np
import pytest
import torch

from gcl_hf.retrieval.analysis import modality_gap, pca_2d, plot_modality_embeddings


def _synthetic(theta, n=64, d=16, seed=0):
    """image_n = cos(θ) e0 + sin(θ) v_n, text_n = cos(θ) e1 + sin(θ) v_n, fused_n = cos(θ) e2 + sin(θ) v_n,
    with unit v_n ⟂ e0, e1, e2 and mean(v_n) = 0 (±pairs). Then every centroid is cos(θ) e_m, so
    centroid distances are cos(θ)·√2, and matched cosines are sin²(θ)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n // 2, d))
    v[:, :3] = 0
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v = np.concatenate([v, -v])
    e = np.eye(d)
    make = lambda m: math.cos(theta) * e[m] + math.sin(theta) * v  # noqa: E731
    return make(0), make(1), make(2)


@pytest.mark.parametrize("theta", [0.3, 1.0, 1.4])
def test_known_gap(theta):
    image, text, fused = _synthetic(theta)
    gap = modality_gap(torch.from_numpy(image).float(), text, fused)
    for pair in ("image-text", "image-fused", "text-fused"):
        assert gap["centroid_distance"][pair] == pytest.approx(math.cos(theta) * math.sqrt(2), abs=1e-6)
        assert gap["matched_cosine"][pair] == pytest.approx(math.sin(theta) ** 2, abs=1e-6)


def test_gap_without_fused_and_normalisation():
    image, text, _ = _synthetic(0.5)
    gap = modality_gap(image * 3.0, text * 0.2)  # scale does not matter: rows are normalised
    assert set(gap["centroid_distance"]) == {"image-text"}
    assert gap["centroid_distance"]["image-text"] == pytest.approx(math.cos(0.5) * math.sqrt(2), abs=1e-6)
    same = modality_gap(image, image)
    assert same["centroid_distance"]["image-text"] == pytest.approx(0.0, abs=1e-12)
    assert same["matched_cosine"]["image-text"] == pytest.approx(1.0)


def test_gap_errors():
    with pytest.raises(ValueError, match="row-aligned"):
        modality_gap(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="text_embeds row 1 is all zeros"):
        modality_gap(np.ones((2, 4)), np.array([[1.0, 0, 0, 0], [0, 0, 0, 0]]))


def test_pca_separates_modalities_along_first_axis():
    image, text, _ = _synthetic(0.8, n=40)
    coords = pca_2d({"image": image, "text": text})
    assert coords["image"].shape == (40, 2)
    # The modality offset (e0 vs e1) has the largest spread: PC1 splits the two clouds.
    assert np.sign(coords["image"][:, 0]).min() == np.sign(coords["image"][:, 0]).max()
    assert np.sign(coords["image"][0, 0]) != np.sign(coords["text"][0, 0])
    again = pca_2d({"image": image, "text": text})
    np.testing.assert_array_equal(again["image"], coords["image"])  # deterministic signs


def test_plot_writes_png(tmp_path):
    image, text, fused = _synthetic(0.8)
    path = tmp_path / "plots" / "gap.png"
    coords = plot_modality_embeddings({"image": image, "text": text, "fused": fused}, path, max_points=20)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert set(coords) == {"image", "text", "fused"} and coords["fused"].shape == (64, 2)
    with pytest.raises(ValueError, match="only 'pca'"):
        plot_modality_embeddings({"image": image}, tmp_path / "x.png", method="tsne")
