"""The loss settings' one parser: pairs, pair weights, and how an unset `negatives` resolves."""

from __future__ import annotations

import pytest

from gcl_hf.losses.settings import (ALL_PAIRS, CLIP_PAIRS, LossSettings, parse_pair_weights, parse_pairs,
                                    resolve_negatives)


# ---------------------------------------------------------------- parse_pairs
def test_parse_pairs_presets_and_strings():
    assert parse_pairs("all") == ALL_PAIRS == parse_pairs(" GCL ")
    assert parse_pairs("clip") == CLIP_PAIRS
    assert parse_pairs("image-text,text-image") == CLIP_PAIRS
    assert parse_pairs("image->fused, f:t,txt->img") == (("image", "fused"), ("fused", "text"), ("text", "image"))
    assert parse_pairs([("image", "text"), "fused->image"]) == (("image", "text"), ("fused", "image"))
    assert parse_pairs(("image", "text")) == (("image", "text"),)  # one bare pair
    assert parse_pairs(ALL_PAIRS) == ALL_PAIRS
    assert len(ALL_PAIRS) == 6 and ALL_PAIRS[:2] == CLIP_PAIRS


@pytest.mark.parametrize("spec,match", [
    ("", "empty pair specification"),
    ("image->text,audio->text", "unknown modality 'audio' in pairs\\[1\\]"),
    ("image", "cannot read pair 'image'"),
    ("image->text->fused", "cannot read pair"),
    ("text->text", "with itself"),
    ("image-text,image->text", "repeats pair image->text"),
    ([("image",)], "is not a pair"),
    (42, "must be a string or a sequence"),
])
def test_parse_pairs_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_pairs(spec)


# ---------------------------------------------------------------- pair weights
def test_pair_weights_forms_agree():
    pairs = ALL_PAIRS
    assert parse_pair_weights(None, pairs) is None and parse_pair_weights(" ", pairs) is None
    positional = parse_pair_weights("1,1,2,2,1,1", pairs)
    assert positional == (1.0, 1.0, 2.0, 2.0, 1.0, 1.0)
    assert parse_pair_weights("image->fused=2,f->i=2", pairs) == positional
    assert parse_pair_weights({"image->fused": 2, "fused->image": 2.0}, pairs) == positional
    assert parse_pair_weights([1, 1, 2, 2, 1, 1], pairs) == positional


@pytest.mark.parametrize("spec,match", [
    ("1,2", "2 weights for 6 pairs"),
    ("1,1,x,1,1,1", "image->fused = 'x' is not a number"),
    ("image->text=1,2", "either all positional weights or all 'pair=weight'"),
    ("image->audio=2", "unknown modality 'audio'"),
    ({"text->fused": -1}, "text->fused must be finite and >= 0"),
    ([0] * 6, "sum to zero"),
])
def test_pair_weights_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_pair_weights(spec, ALL_PAIRS)


# ---------------------------------------------------------------- negatives: the paper's defaults
@pytest.mark.parametrize("pairs,objective,expected", [
    (ALL_PAIRS, "softmax", "all"),  # GCL's Eq. 2
    (CLIP_PAIRS, "softmax", "modality"),  # CLIP's loss
    ((("image", "text"),), "softmax", "modality"),
    ((("image", "fused"), ("text", "fused")), "softmax", "all"),  # any fused pair: one softmax over all
    (ALL_PAIRS, "sigmoid", "modality"),  # the sigmoid objective's only form
])
def test_unset_negatives_resolve_from_pairs_and_objective(pairs, objective, expected):
    assert resolve_negatives(pairs, objective, None) == expected
    assert LossSettings.parse(pairs, objective=objective).negatives == expected


def test_explicit_negatives_always_win():
    assert LossSettings.parse(CLIP_PAIRS, negatives="all").negatives == "all"
    assert LossSettings.parse(ALL_PAIRS, negatives="modality").negatives == "modality"
    with pytest.raises(ValueError, match="sigmoid.*modality"):
        LossSettings.parse(ALL_PAIRS, negatives="all", objective="sigmoid")
