"""`gcl-hf eval` end to end on benchmark fixtures: JSON equal to the evaluator, the papers' headline average,
saved rankings that a peer tool rescoring them turns into the same numbers, a table never cut."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmark_fixtures import write_mbeir, write_mmeb

from gcl_hf import GCLModel, cli
from gcl_hf.benchmarks import load_benchmark
from gcl_hf.cli.eval import average_metrics, format_table
from gcl_hf.cli.rankings import read_qrels, read_run_json, read_trec_run, trec_id
from gcl_hf.retrieval.evaluation import evaluate_retrieval
from gcl_hf.testing import tiny_clip, tiny_processor

MBEIR_TASKS = ("mscoco_task0", "mscoco_task3", "fashioniq_task7")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    write_mbeir(root / "mbeir", tasks=MBEIR_TASKS)
    write_mmeb(root / "mmeb", subsets=("MSCOCO_i2t", "CIRR"))
    model = GCLModel.from_backbone(tiny_clip(seed=0)).eval()
    processor = tiny_processor()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return root, model, processor


def _eval(root: Path, benchmark: str, *extra: str) -> dict:
    out = root / f"{benchmark}-{len(extra)}.json"
    argv = ["eval", "--benchmark", benchmark, "--root", str(root / benchmark), "--model", str(root / "model"),
            "--output", str(out), "--batch-size", "4", "--quiet", *extra]
    assert cli.main(argv) == 0
    return json.loads(out.read_text())


def _rescore_trec(run_file: Path, qrels_file: Path, k: int) -> float:
    """A peer tool's view: parse the TREC files by hand, a query counts when a relevant doc is in its top k."""
    relevant: dict[str, set[str]] = {}
    for line in qrels_file.read_text().splitlines():
        qid, _, doc, rel = line.split()
        if int(rel) > 0:
            relevant.setdefault(qid, set()).add(doc)
    ranked: dict[str, list[tuple[int, str]]] = {}
    for line in run_file.read_text().splitlines():
        qid, q0, doc, rank, score, run = line.split()
        assert q0 == "Q0" and run == "gcl-hf"
        float(score)
        ranked.setdefault(qid, []).append((int(rank), doc))
    hits = sum(any(doc in relevant[q] for _, doc in sorted(ranked.get(q, []))[:k]) for q in relevant)
    return hits / len(relevant)


def test_eval_json_matches_the_evaluator_and_averages_headlines(setup):
    root, model, processor = setup
    payload = _eval(root, "mbeir", "--option", 'pool="global"')
    tasks = load_benchmark("mbeir", root / "mbeir", pool="global")
    assert set(payload["results"]) == {t.name for t in tasks} and len(tasks) == 3
    for task in tasks:
        direct = evaluate_retrieval(model, processor, task, k=task.k, batch_size=4, show_progress=False)
        assert payload["results"][task.name] == pytest.approx(direct)
    headline = {t: h["metric"] for t, h in payload["headline"].items()}
    assert headline == {"mbeir_mscoco_task0_union": "recall@5", "mbeir_mscoco_task3_union": "recall@5",
                        "mbeir_fashioniq_task7_union": "recall@10"}
    expected = sum(payload["results"][t][m] for t, m in headline.items()) / 3
    assert payload["average"] == pytest.approx({"headline": expected})
    # not a mean over every key: the global pool makes recall@1 differ from the headline mean
    assert set(payload["average"]) == {"headline"}


def test_average_is_each_tasks_headline_not_every_key():
    results = {"a": {"recall@1": 0.1, "recall@5": 0.5, "recall@10": 0.6, "num_queries": 10},
               "fashion": {"recall@10": 1.0, "recall@20": 1.0, "recall@50": 1.0, "num_queries": 1}}
    assert average_metrics(results, {"a": "recall@5", "fashion": "recall@10"}) == {"headline": 0.75}
    assert average_metrics({}, {}) == {}
    with pytest.raises(ValueError, match="no 'recall@5'"):
        average_metrics({"fashion": results["fashion"]}, {"fashion": "recall@5"})


def test_saved_rankings_rescore_to_the_reported_metrics(setup):
    root, _, _ = setup
    ranks = root / "ranks-mbeir"
    payload = _eval(root, "mbeir", "--option", 'pool="global"', "--save_rankings", str(ranks), "--rankings-depth", "12")
    tasks = {t.name: t for t in load_benchmark("mbeir", root / "mbeir", pool="global")}
    for name, metrics in payload["results"].items():
        run, qrels = ranks / f"{name}.trec", ranks / f"{name}.qrels"
        for key, value in metrics.items():
            if key.startswith("recall@"):
                assert _rescore_trec(run, qrels, int(key.split("@")[1])) == pytest.approx(value), (name, key)
        assert read_qrels(qrels) == tasks[name].qrels
        trec = read_trec_run(run)
        as_json = read_run_json(ranks / f"{name}.run.json")
        assert list(trec) == list(as_json) == list(tasks[name].queries["id"])
        pool = len(tasks[name].corpus)
        for qid, hits in trec.items():
            assert len(hits) == min(12, pool)
            assert [d for d, _ in hits] == list(as_json[qid])  # the JSON keeps rank order
            scores = [s for _, s in hits]
            assert scores == sorted(scores, reverse=True)
            assert scores == pytest.approx(list(as_json[qid].values()), abs=1e-7)
    assert payload["rankings"]["directory"] == str(ranks)


def test_mmeb_rankings_rescore_to_precision_at_1(setup):
    root, _, _ = setup
    ranks = root / "ranks-mmeb"
    payload = _eval(root, "mmeb", "--save-rankings", str(ranks), "--option", 'subsets=["MSCOCO_i2t", "CIRR"]')
    tasks = {t.name: t for t in load_benchmark("mmeb", root / "mmeb", subsets=["MSCOCO_i2t", "CIRR"])}
    assert len(tasks) == 2
    assert payload["average"] == pytest.approx(
        {"headline": sum(m["precision@1"] for m in payload["results"].values()) / len(tasks)})
    for name, metrics in payload["results"].items():
        run = read_trec_run(ranks / f"{name}.trec")
        qrels = read_qrels(ranks / f"{name}.qrels")
        hits = sum(run[q][0][0] in qrels[q] for q in qrels)
        assert hits / len(qrels) == pytest.approx(metrics["precision@1"])
        for qid, ranked in run.items():  # only the query's own candidates
            assert {d for d, _ in ranked} == set(tasks[name].candidates[qid])


def test_trec_ids_with_spaces_round_trip(tmp_path):
    assert trec_id("9:12") == "9:12" and trec_id("a b%c") == "a%20b%25c"
    from gcl_hf.cli.rankings import write_rankings
    from gcl_hf.retrieval.evaluation import TaskRankings

    class Task:
        name, qrels = "t/1", {"q 1": {"doc a"}}

    write_rankings(tmp_path, Task, TaskRankings("t/1", ["q 1"], [["doc a", "doc%b"]], [[0.5, 0.25]]))
    assert read_trec_run(tmp_path / "t_1.trec") == {"q 1": [("doc a", 0.5), ("doc%b", 0.25)]}
    assert read_qrels(tmp_path / "t_1.qrels") == {"q 1": {"doc a"}}
    assert read_run_json(tmp_path / "t_1.run.json") == {"q 1": {"doc a": 0.5, "doc%b": 0.25}}


def test_format_table_keeps_every_cell():
    table = format_table(["task", "value"], [["a_very_long_task_name_indeed", "12.50"], ["b", "3.00"]], right={1})
    lines = table.splitlines()
    assert lines[2] == "a_very_long_task_name_indeed  12.50"
    assert lines[3] == "b                              3.00"


def test_table_not_truncated_in_a_narrow_pipe(setup, tmp_path):
    root, _, _ = setup
    env = {**os.environ, "COLUMNS": "40", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "gcl_hf.cli", "eval", "--benchmark", "mbeir", "--root", str(root / "mbeir"),
         "--model", str(root / "model"), "--output", str(tmp_path / "e.json"), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("mbeir_")}
    assert set(rows) == {f"mbeir_{t}" for t in MBEIR_TASKS}
    assert "…" not in proc.stdout and max(len(line) for line in proc.stdout.splitlines()) > 40
    for line in rows.values():  # every metric column is there in full (numbers or '-')
        assert len(line.split()) == 4 + 5
    payload = json.loads((tmp_path / "e.json").read_text())
    assert f"{100 * payload['average']['headline']:.2f}" in proc.stdout.splitlines()[-2]


def test_save_rankings_says_which_files_are_current_and_drops_an_older_runs(setup, tmp_path):
    """A second run into one --save-rankings folder used to leave the first run's files beside its own."""
    root, _, _ = setup
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    (ranks / "mine.txt").write_text("the user's")
    _eval(root, "mmeb", "--save-rankings", str(ranks), "--option", 'subsets=["MSCOCO_i2t", "CIRR"]')
    first = json.loads((ranks / "rankings.json").read_text())["tasks"]
    assert len(first) == 2
    _eval(root, "mmeb", "--save-rankings", str(ranks), "--option", 'subsets=["CIRR"]', "--run-name", "second")
    manifest = json.loads((ranks / "rankings.json").read_text())
    assert manifest["run_name"] == "second" and len(manifest["tasks"]) == 1
    (files,) = manifest["tasks"].values()
    assert sorted(p.name for p in ranks.iterdir()) == sorted([*files.values(), "mine.txt", "rankings.json"])


def test_errors_flag_takes_the_errors_vocabulary(capsys):
    from gcl_hf.cli.eval import build_parser
    from gcl_hf.errors import ERRORS_MODES

    action = next(a for a in build_parser()._actions if "--errors" in a.option_strings)
    assert tuple(action.choices) == ERRORS_MODES
