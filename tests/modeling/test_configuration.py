"""GCLConfig: the paper's defaults, old configs keep their values, one writer for the loss settings."""

import json

import pytest

from gcl_hf import GCLConfig, GCLModel
from gcl_hf.losses.settings import ALL_PAIRS, CLIP_PAIRS
from gcl_hf.testing import tiny_clip


def test_default_is_the_papers_loss():
    config = GCLConfig()
    assert [tuple(p) for p in config.pairs] == list(ALL_PAIRS)
    assert config.negatives is None  # resolved from the pairs, so changing the pairs changes the default
    assert config.loss_settings.negatives == "all" and config.loss_settings.objective == "softmax"
    assert GCLConfig(pairs=[list(p) for p in CLIP_PAIRS]).loss_settings.negatives == "modality"


def test_config_saved_before_the_default_changed_keeps_its_negatives(tmp_path):
    model = GCLModel.from_backbone(tiny_clip())
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    assert saved["negatives"] is None
    saved["negatives"] = "modality"  # what every config written by gcl-hf 0.1 carries
    path.write_text(json.dumps(saved))
    loaded = GCLModel.from_pretrained(tmp_path)
    assert loaded.config.negatives == "modality" and loaded.config.loss_settings.negatives == "modality"


def test_update_loss_settings_is_validated_together_and_atomic():
    config = GCLConfig()
    config.update_loss_settings(pairs="clip")
    assert config.pairs == [["image", "text"], ["text", "image"]] and config.pair_weights is None
    assert config.loss_settings.negatives == "modality"
    config.update_loss_settings(pairs="all", pair_weights=[1, 1, 2, 2, 1, 1])
    assert config.pair_weights == [1, 1, 2, 2, 1, 1] and config.loss_settings.negatives == "all"
    with pytest.raises(ValueError, match="sigmoid"):
        config.update_loss_settings(objective="sigmoid", negatives="all")
    assert config.objective == "softmax" and config.negatives is None  # nothing half-applied
    with pytest.raises(ValueError, match="not loss fields"):
        config.update_loss_settings(fusion="mean")


@pytest.mark.parametrize("kwargs,match", [
    ({"fusion": "concat"}, "GCLConfig.fusion='concat'"),
    ({"negatives": "batch"}, "GCLConfig: negatives='batch'"),
    ({"pairs": [["image", "audio"]]}, "unknown modality 'audio'"),
    ({"pair_weights": [1, 2]}, "2 weights for 6 pairs"),
])
def test_invalid_settings_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GCLConfig(**kwargs)
