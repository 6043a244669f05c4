"""`GCLTrainingArguments`' loss fields are checked when the arguments are built, by the loss settings' one parser."""

import pytest
from transformers import HfArgumentParser

from gcl_hf.training.arguments import GCLTrainingArguments


def test_an_impossible_loss_combination_is_refused_at_construction(tmp_path):
    """objective="sigmoid" with negatives="all" used to be accepted here and fail later inside the trainer."""
    with pytest.raises(ValueError, match='GCLTrainingArguments: objective="sigmoid" supports negatives="modality"'):
        GCLTrainingArguments(output_dir=str(tmp_path), objective="sigmoid", negatives="all", use_cpu=True)
    args = GCLTrainingArguments(output_dir=str(tmp_path), objective="sigmoid", negatives="modality", use_cpu=True)
    assert (args.objective, args.negatives) == ("sigmoid", "modality")


def test_loss_fields_are_closed_choices_on_the_command_line(tmp_path, capsys):
    parser = HfArgumentParser(GCLTrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--negatives", "modality",
                                                   "--fusion", "mean", "--use_cpu"])
    assert (args.negatives, args.fusion) == ("modality", "mean")
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--negatives", "some"])
    assert "invalid choice: 'some' (choose from 'all', 'modality')" in capsys.readouterr().err


def test_image_errors_is_the_errors_vocabulary(tmp_path, capsys):
    from gcl_hf.errors import ERRORS_MODES

    with pytest.raises(ValueError, match=r"GCLTrainingArguments.image_errors must be one of \('raise', 'skip'\), "
                                         r"got 'ignore'"):
        GCLTrainingArguments(output_dir=str(tmp_path), image_errors="ignore", use_cpu=True)
    parser = HfArgumentParser(GCLTrainingArguments)
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--image_errors", "ignore"])
    assert "invalid choice: 'ignore' (choose from " + ", ".join(map(repr, ERRORS_MODES)) in capsys.readouterr().err
