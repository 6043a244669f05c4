"""The `gcl-hf` command line: dispatch, and `gcl-hf eval` end to end on an M-BEIR fixture."""

import json

import pytest
import torch
from benchmark_fixtures import write_mbeir

from gcl_hf import GCLModel, cli
from gcl_hf.benchmarks import load_benchmark
from gcl_hf.cli.eval import average_metrics
from gcl_hf.retrieval.evaluation import evaluate_retrieval
from gcl_hf.testing import tiny_clip, tiny_processor


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS)


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_eval_writes_json_matching_the_evaluator(tmp_path, capsys):
    write_mbeir(tmp_path / "mbeir", tasks=("mscoco_task0", "mscoco_task3"))
    torch.manual_seed(0)
    model = GCLModel.from_backbone(tiny_clip()).eval()
    processor = tiny_processor()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    out = tmp_path / "eval.json"
    code = cli.main(["eval", "--benchmark", "mbeir", "--root", str(tmp_path / "mbeir"),
                     "--model", str(tmp_path / "model"), "--output", str(out), "--batch-size", "2"])
    assert code == 0
    payload = json.loads(out.read_text())
    assert len(payload["results"]) == 2
    printed = capsys.readouterr().out
    assert "average" in printed and "recall@5" in printed
    tasks = load_benchmark("mbeir", tmp_path / "mbeir")
    for task in tasks:
        direct = evaluate_retrieval(model, processor, task, k=task.k, batch_size=2, show_progress=False)
        assert payload["results"][task.name] == pytest.approx(direct)
    assert payload["average"] == pytest.approx(average_metrics(payload["results"]))


def test_eval_bad_option_names_it(tmp_path):
    with pytest.raises(SystemExit, match="--option 'pool'"):
        cli.main(["eval", "--benchmark", "mbeir", "--root", str(tmp_path), "--model", str(tmp_path),
                  "--option", "pool"])


def test_average_metrics_is_the_unweighted_task_mean():
    results = {"a": {"recall@5": 0.5, "num_queries": 10}, "b": {"recall@5": 1.0, "recall@10": 1.0, "num_queries": 1}}
    assert average_metrics(results) == {"recall@5": 0.75}
