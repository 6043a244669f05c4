"""The contrastive batch rule: a batch without negatives is refused, a last batch of one is dropped, a small
batch warns."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from gcl_hf import GCLModel
from gcl_hf.testing import tiny_clip, tiny_processor
from gcl_hf.training.arguments import GCLTrainingArguments
from gcl_hf.training.batch import (
    SMALL_BATCH,
    ContrastiveBatchError,
    negatives_per_anchor,
)
from gcl_hf.training.trainer import GCLTrainer

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from train_dist_check import dataset


def _trainer(tmp_path, rows=None, **overrides):
    kwargs = dict(output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3,
                  logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0, disable_tqdm=True)
    kwargs.update(overrides)
    data = dataset() if rows is None else dataset().select(range(rows))
    return GCLTrainer(GCLModel.from_backbone(tiny_clip()), GCLTrainingArguments(**kwargs), train_dataset=data,
                      processing_class=tiny_processor())


def test_negatives_per_anchor():
    clip = [("image", "text"), ("text", "image")]
    assert negatives_per_anchor(clip, "modality", 8) == 7
    assert negatives_per_anchor(clip, "all", 1) == 0  # the other modality of the same pair is the target
    six = [("image", "text"), ("text", "image"), ("image", "fused"), ("fused", "image"), ("text", "fused"),
           ("fused", "text")]
    assert negatives_per_anchor(six, "all", 1) == 1 and negatives_per_anchor(six, "all", 8) == 22


def test_a_batch_of_one_clip_pair_is_refused_naming_the_batch_size(tmp_path):
    """``--per_device_train_batch_size 1 --pairs clip`` used to log loss 0 and gradient 0 and exit 0."""
    with pytest.raises(ContrastiveBatchError, match=r"per_device_train_batch_size=1 gives a contrastive batch of 1 "
                                                    r"pair\(s\): no in-batch negatives"):
        _trainer(tmp_path, per_device_train_batch_size=1, pairs="clip")


def test_a_small_batch_warns_with_the_rule(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="gcl_hf.training.batch"):
        _trainer(tmp_path, per_device_train_batch_size=8)
    assert "a contrastive batch of 8 pairs gives each anchor 22 in-batch negatives" in caplog.text
    assert f"below {SMALL_BATCH} pairs the retrieval signal is weak" in caplog.text


def test_a_last_batch_of_one_is_dropped(tmp_path):
    """9 rows in batches of 4 with CLIP pairs: the third batch, of one pair, used to train on a loss of 0."""
    trainer = _trainer(tmp_path, rows=9, pairs="clip", max_steps=-1, num_train_epochs=1)
    assert trainer.args.dataloader_drop_last
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)


def test_gcl_hf_train_reports_a_batch_without_negatives_in_one_line(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from gcl_hf import cli

    tiny_clip().save_pretrained(tmp_path / "clip")
    tiny_processor().save_pretrained(tmp_path / "clip")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        lines.append(f'{{"image": "{i}.png", "text": "caption {i}"}}')
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    code = cli.main(["train", "--model", str(tmp_path / "clip"), "--train_data", str(tmp_path / "pairs.jsonl"),
                     "--output_dir", str(tmp_path / "out"), "--per_device_train_batch_size", "1", "--pairs", "clip",
                     "--max_steps", "1", "--use_cpu", "--report_to", "none"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "gcl-hf train: error: per_device_train_batch_size=1 gives a contrastive batch of 1 pair(s)" in err
