"""gcl_loss against an independent loop implementation, transformers' CLIP and SigLIP losses,
gradient flow, efficiency (matmul count), errors and parse_pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile
from transformers.models.clip.modeling_clip import image_text_contrastive_loss

from gcl_hf.losses.gcl import ALL_PAIRS, CLIP_PAIRS, MODALITY_NAMES, gcl_loss, pair_name

N, D = 4, 6


def _embeds(seed: int = 0, n: int = N, d: int = D, dtype=torch.float64) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {m: F.normalize(torch.randn(n, d, generator=gen, dtype=dtype), dim=-1) for m in MODALITY_NAMES}


# ---------------------------------------------------------------- reference (plain loops)
def _lse(values: list[torch.Tensor]) -> torch.Tensor:
    top = max(v.item() for v in values)
    return top + torch.log(sum(torch.exp(v - top) for v in values))


def ref_pair_loss(E, a, b, scale, negatives, objective, bias, involved):
    n = E[a].shape[0]
    total = 0.0
    for i in range(n):
        if objective == "sigmoid":
            for k in range(n):
                z = 1.0 if k == i else -1.0
                x = scale * torch.dot(E[a][i], E[b][k]) + bias
                total = total - torch.log(torch.sigmoid(z * x))
            continue
        if negatives == "modality":
            cands = [(b, k) for k in range(n)]
        else:  # every embedding of the involved modalities except the anchor itself
            cands = [(m, k) for m in involved for k in range(n) if (m, k) != (a, i)]
        logits = [scale * torch.dot(E[a][i], E[m][k]) for m, k in cands]
        total = total + _lse(logits) - logits[cands.index((b, i))]
    return total / n


def ref_gcl_loss(E, scale, pairs, weights, negatives, objective, bias=0.0):
    weights = weights or [1.0] * len(pairs)
    involved = [m for m in MODALITY_NAMES if any(m in p for p in pairs)]
    per_pair = {pair_name((a, b)): ref_pair_loss(E, a, b, scale, negatives, objective, bias, involved)
                for a, b in pairs}
    total = sum(w * l for w, l in zip(weights, per_pair.values())) / sum(weights)
    return total, per_pair


PAIR_SETS = {
    "all": ALL_PAIRS,
    "clip": CLIP_PAIRS,
    "to_fused": (("image", "fused"), ("text", "fused")),
    "single": (("fused", "text"),),
    "mixed": (("text", "image"), ("fused", "image"), ("image", "fused")),
}
MODES = [("modality", "softmax"), ("all", "softmax"), ("modality", "sigmoid")]


@pytest.mark.parametrize("weighted", [False, True], ids=["equal", "weighted"])
@pytest.mark.parametrize("pair_set", list(PAIR_SETS))
@pytest.mark.parametrize("negatives,objective", MODES)
def test_matches_loop_reference(negatives, objective, pair_set, weighted):
    pairs = PAIR_SETS[pair_set]
    weights = [0.5 + 0.75 * j for j in range(len(pairs))] if weighted else None
    if weighted and len(pairs) > 1:
        weights[-1] = 0.0  # a zero weight is allowed
    used = {m for p in pairs for m in p}

    def leaves():
        E = {m: (t.clone().requires_grad_() if m in used else None) for m, t in _embeds(3).items()}
        return E, torch.tensor(6.0, dtype=torch.float64, requires_grad=True), \
            torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)

    E1, s1, b1 = leaves()
    got, got_pairs = gcl_loss(E1["image"], E1["text"], E1["fused"], s1, pairs=pairs, pair_weights=weights,
                              negatives=negatives, objective=objective, logit_bias=b1, return_pair_losses=True)
    E2, s2, b2 = leaves()
    want, want_pairs = ref_gcl_loss(E2, s2, pairs, weights, negatives, objective,
                                    b2 if objective == "sigmoid" else 0.0)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert list(got_pairs) == [pair_name(p) for p in pairs]
    for key in want_pairs:
        torch.testing.assert_close(got_pairs[key], want_pairs[key].detach(), rtol=1e-12, atol=1e-12)
        assert not got_pairs[key].requires_grad
    got.backward()
    want.backward()
    live = {m for j, p in enumerate(pairs) if weights is None or weights[j] > 0 for m in p}
    for m in used:
        if m in live:
            assert E1[m].grad.abs().max() > 0, m
        torch.testing.assert_close(E1[m].grad, E2[m].grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-10, atol=1e-12)
    if objective == "sigmoid":
        torch.testing.assert_close(b1.grad, b2.grad, rtol=1e-10, atol=1e-12)
    else:
        assert b1.grad is None  # softmax ignores the bias (it cancels)


def eq2_loop(E: dict[str, torch.Tensor], scale: float) -> float:
    """The paper's Eq. 2 written out as printed, with plain floats:
    L = -1/(6N) Σ_j Σ_(a,b)∈P log exp(s·e_a^j·e_b^j) / Σ_(m∈{i,t,it}) Σ_k exp(s·e_a^j·e_m^k),
    the anchor's similarity to itself left out of the denominator."""
    vec = {m: E[m].tolist() for m in MODALITY_NAMES}
    n = len(vec["image"])

    def sim(x, y):
        return scale * sum(u * v for u, v in zip(x, y))

    total = 0.0
    for j in range(n):
        for a, b in ALL_PAIRS:
            anchor = vec[a][j]
            denominator = sum(math.exp(sim(anchor, vec[m][k])) for m in MODALITY_NAMES for k in range(n)
                              if (m, k) != (a, j))
            total += math.log(math.exp(sim(anchor, vec[b][j])) / denominator)
    return -total / (6 * n)


@pytest.mark.parametrize("seed,scale", [(1, 4.0), (2, 11.0), (3, 0.5)])
def test_default_is_the_papers_eq2(seed, scale):
    E = _embeds(seed)
    default = gcl_loss(E["image"], E["text"], E["fused"], scale)
    assert default.item() == pytest.approx(eq2_loop(E, scale), rel=1e-12, abs=1e-12)
    torch.testing.assert_close(default, gcl_loss(E["image"], E["text"], E["fused"], scale, negatives="all"))
    assert abs(default - gcl_loss(E["image"], E["text"], E["fused"], scale, negatives="modality")) > 1e-3


def test_modality_negatives_is_mean_of_6n_per_pair_log_terms():
    E = _embeds(1)
    total = gcl_loss(E["image"], E["text"], E["fused"], 4.0, negatives="modality")
    terms = []
    for a, b in ALL_PAIRS:
        logp = torch.log_softmax(4.0 * E[a] @ E[b].T, dim=1)
        terms.extend(-logp[i, i] for i in range(N))
    torch.testing.assert_close(total, torch.stack(terms).sum() / (6 * N))


def test_weighted_average_of_pair_losses_and_mapping_weights():
    E = _embeds(2)
    weights = [1, 2, 3, 0, 1, 0.5]
    total, per_pair = gcl_loss(E["image"], E["text"], E["fused"], 5.0, pair_weights=weights,
                               return_pair_losses=True)
    expected = sum(w * per_pair[pair_name(p)] for w, p in zip(weights, ALL_PAIRS)) / sum(weights)
    torch.testing.assert_close(total, expected)
    by_name = {pair_name(p): float(w) for p, w in zip(ALL_PAIRS, weights) if w != 1}
    torch.testing.assert_close(gcl_loss(E["image"], E["text"], E["fused"], 5.0, pair_weights=by_name), total)


# ---------------------------------------------------------------- transformers' CLIP and SigLIP
def test_clip_pairs_equal_transformers_clip_loss():
    E = _embeds(4, n=7, d=16, dtype=torch.float32)
    scale = 14.3
    ours = gcl_loss(E["image"], E["text"], None, scale, pairs=CLIP_PAIRS)  # default negatives: CLIP's loss
    theirs = image_text_contrastive_loss(scale * E["text"] @ E["image"].T)
    torch.testing.assert_close(ours, theirs)
    with_all = gcl_loss(E["image"], E["text"], None, scale, pairs=CLIP_PAIRS, negatives="all")  # explicit wins
    assert abs(with_all - theirs) > 1e-3
    # the bare transpose pair order and string spec give the same
    torch.testing.assert_close(gcl_loss(E["image"], E["text"], None, scale, pairs="text->image,image->text"), ours)


def _batch(processor, n: int = 4):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)]
    texts = [f"a {c} square number {i}" for i, c in enumerate(["red", "blue", "green", "tiny yellow"][:n])]
    return processor(text=texts, images=images, return_tensors="pt", padding=True)


def test_clip_pairs_equal_clipmodel_loss_and_gradients(tiny_processor):
    from gcl_hf.testing import tiny_clip

    model = tiny_clip(seed=1)
    out = model(**_batch(tiny_processor), return_loss=True)
    ours = gcl_loss(out.image_embeds, out.text_embeds, None, model.logit_scale.exp(), pairs=CLIP_PAIRS)
    torch.testing.assert_close(ours, out.loss)
    params = [p for p in model.parameters() if p.requires_grad]
    g_ours = torch.autograd.grad(ours, params, retain_graph=True, allow_unused=True)
    g_theirs = torch.autograd.grad(out.loss, params, allow_unused=True)
    for a, b in zip(g_ours, g_theirs):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("pairs", [[("text", "image")], [("image", "text")], CLIP_PAIRS])
def test_sigmoid_equals_siglipmodel_loss_and_gradients(pairs):
    from gcl_hf.testing import byte_level_tokenizer, tiny_siglip

    model = tiny_siglip(seed=2)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(7.0))
        model.logit_bias.fill_(-2.5)
    tok = byte_level_tokenizer()
    texts = ["a red circle", "two blue squares", "green", "a digit 7 on grey"]
    input_ids = tok(texts, padding="max_length", truncation=True, max_length=16,
                    return_tensors="pt").input_ids
    pixel_values = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
    ours = gcl_loss(out.image_embeds, out.text_embeds, None, model.logit_scale.exp(), pairs=pairs,
                    objective="sigmoid", logit_bias=model.logit_bias)
    assert out.loss.abs() > 0.1
    torch.testing.assert_close(ours, out.loss)
    params = [model.logit_scale, model.logit_bias, model.vision_model.embeddings.patch_embedding.weight]
    g_ours = torch.autograd.grad(ours, params, retain_graph=True)
    g_theirs = torch.autograd.grad(out.loss, params)
    for a, b in zip(g_ours, g_theirs):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- gradients, precision, efficiency
@pytest.mark.parametrize("negatives,objective", MODES)
def test_gradient_reaches_embeddings_scale_and_bias(negatives, objective):
    E = {m: t.float().requires_grad_() for m, t in _embeds(5).items()}
    raw_scale = torch.tensor(math.log(10.0), requires_grad=True)  # as CLIP stores it
    bias = torch.tensor([-1.0], requires_grad=True)  # SigLIP's shape [1]
    loss = gcl_loss(E["image"], E["text"], E["fused"], raw_scale.exp(), negatives=negatives,
                    objective=objective, logit_bias=bias)
    assert loss.ndim == 0 and loss.requires_grad
    loss.backward()
    for m in MODALITY_NAMES:
        assert E[m].grad is not None and E[m].grad.abs().max() > 0, m
    assert raw_scale.grad is not None and raw_scale.grad.abs() > 0
    if objective == "sigmoid":
        assert bias.grad is not None and bias.grad.abs() > 0


def test_bfloat16_inputs_give_float32_loss_close_to_float32():
    E = _embeds(6, n=16, d=32, dtype=torch.float32)
    ref = gcl_loss(E["image"], E["text"], E["fused"], 20.0)
    half = {m: t.bfloat16() for m, t in E.items()}
    got = gcl_loss(half["image"], half["text"], half["fused"], 20.0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0.02, atol=0.02)


def _count_matmuls(**kwargs) -> int:
    E = _embeds(7, dtype=torch.float32)
    with profile() as prof:
        gcl_loss(E["image"], E["text"], E["fused"], 3.0, **kwargs)
    return sum(e.count for e in prof.key_averages() if e.key == "aten::mm")


def test_each_similarity_block_is_computed_once():
    assert _count_matmuls(negatives="modality") == 3  # six directed pairs share three N×N blocks
    assert _count_matmuls(objective="sigmoid") == 3
    assert _count_matmuls() == 1  # Eq. 2: one 3N×3N block
    assert _count_matmuls(pairs=CLIP_PAIRS) == 1


def test_pair_losses_differ_by_direction_for_softmax():
    E = _embeds(8)
    _, per_pair = gcl_loss(E["image"], E["text"], E["fused"], 8.0, return_pair_losses=True)
    assert set(per_pair) == {pair_name(p) for p in ALL_PAIRS}
    assert (per_pair["image->text"] - per_pair["text->image"]).abs() > 1e-6


# ---------------------------------------------------------------- errors
def _ok():
    E = _embeds(9, dtype=torch.float32)
    return E["image"], E["text"], E["fused"]


@pytest.mark.parametrize("make,match", [
    (lambda i, t, f: gcl_loss(i, t[:3], f, 1.0), r"text_embeds has shape \[3, 6\] but image_embeds has \[4, 6\]"),
    (lambda i, t, f: gcl_loss(i, t, f[:, :5], 1.0), r"fused_embeds has shape"),
    (lambda i, t, f: gcl_loss(i, t.double(), f, 1.0), r"text_embeds has dtype torch.float64"),
    (lambda i, t, f: gcl_loss(i, t.to("meta"), f, 1.0), r"text_embeds is on meta but image_embeds is on cpu"),
    (lambda i, t, f: gcl_loss(i[:0], t[:0], f[:0], 1.0), r"empty batch"),
    (lambda i, t, f: gcl_loss(i, t, None, 1.0), r"fused_embeds is None but pair\(s\) image->fused"),
    (lambda i, t, f: gcl_loss(None, t, f, 1.0, pairs=CLIP_PAIRS), r"image_embeds is None"),
    (lambda i, t, f: gcl_loss(i[0], t[0], f[0], 1.0), r"image_embeds must have shape \[N, D\]"),
    (lambda i, t, f: gcl_loss(i.long(), t.long(), f.long(), 1.0), r"floating point"),
    (lambda i, t, f: gcl_loss(i, t, f, 1.0, pairs=[("image", "audio")]), r"unknown modality 'audio'"),
    (lambda i, t, f: gcl_loss(i, t, f, 1.0, pairs=[("image", "image")]), r"with itself"),
    (lambda i, t, f: gcl_loss(i, t, f, 1.0, pairs=[]), r"pairs is empty"),
    (lambda i, t, f: gcl_loss(i, t, f, 1.0, pair_weights=[1.0] * 5), r"pair_weights has 5 weights for 6 pairs"),
    (lambda i, t, f: gcl_loss(i, t, f, 1.0, pair_weights=[1, 1, -1, 1, 1, 1]), r"image->fused must be finite and >= 0"),
    (lambda i, t, f: gcl_loss(i, t, f, 1.0, pair_weights=[0] * 6), r"sum to zero"),
    (lambda i, t, f: gcl_loss(i, t, f, 1.0, pair_weights=[float("nan")] + [1] * 5), r"finite and >= 0"),
    (lambda i, t, f: gcl_loss(i, t, f, 1.0, pair_weights={"image->audio": 1.0}), r"not in pairs"),
    (lambda i, t, f: gcl_loss(i, t, f, 1.0, negatives="batch"), r"negatives='batch': expected one of"),
    (lambda i, t, f: gcl_loss(i, t, f, 1.0, objective="hinge"), r"objective='hinge': expected one of"),
    (lambda i, t, f: gcl_loss(i, t, f, 1.0, negatives="all", objective="sigmoid"), r"sigmoid.*modality"),
    (lambda i, t, f: gcl_loss(i, t, f, torch.ones(2)), r"logit_scale must be a float or a one-element tensor"),
    (lambda i, t, f: gcl_loss(i, t, f, "10"), r"logit_scale must be a float"),
])
def test_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make(*_ok())


def test_unused_embeddings_are_not_validated():
    i, t, _ = _ok()
    loss = gcl_loss(i, t, torch.zeros(2, 3, dtype=torch.float64), 2.0, pairs=CLIP_PAIRS)
    torch.testing.assert_close(loss, gcl_loss(i, t, None, 2.0, pairs=CLIP_PAIRS))
