"""`gcl-hf demo`: the pipeline on a tiny config (determinism, what it records), the evaluator it uses, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from gcl_hf import GCLModel
from gcl_hf.demo.backbone import build_demo_backbone, build_demo_processor
from gcl_hf.demo.config import ARMS, Arm, DemoConfig
from gcl_hf.demo.corpus import DemoCorpusConfig, build_demo_corpus
from gcl_hf.demo.evaluation import (
    CELLS,
    PoolEmbeddings,
    encode_test_pool,
    score_cells,
    score_local_pools,
)
from gcl_hf.demo.pipeline import comparable, run_demo
from gcl_hf.demo.run import build_parser, config_from_args, main
from gcl_hf.retrieval.evaluation import evaluate_retrieval

from .conftest import TINY

PAIRS = {"clip": {"image->text", "text->image"},
         "all": {"image->text", "text->image", "image->fused", "fused->image", "text->fused", "fused->text"}}
MODELS = ["pretrained", "cl", "gcl", "gcl-pair"]


def test_same_config_same_numbers(tmp_path):
    small = {**TINY, "seeds": (3,), "arms": ARMS[:2], "gallery_queries": 0, "plot": False}
    runs = [run_demo(DemoConfig(output_dir=str(tmp_path / name), **small)) for name in ("a", "b")]
    on_disk = []
    for run in runs:
        with open(run.results_path) as f:
            on_disk.append(json.load(f))
    assert on_disk[0] == json.loads(json.dumps(runs[0].results))  # results.json is what the run returned
    assert comparable(on_disk[0]) == comparable(on_disk[1])
    assert on_disk[0]["seeds"]["3"]["models"]["gcl"]["cells"]["fused->fused"]  # not vacuously equal
    assert on_disk[0]["config"]["output_dir"] != on_disk[1]["config"]["output_dir"]


def test_arms_train_differently_from_one_start(tiny_run):
    emb = tiny_run.first_seed.embeddings
    assert not torch.equal(emb["cl"].corpus, emb["gcl"].corpus)
    assert not torch.equal(emb["gcl"].corpus, emb["gcl-pair"].corpus)
    assert not torch.equal(emb["pretrained"].corpus, emb["cl"].corpus)


def test_every_seed_model_and_cell_is_recorded(tiny_run):
    results = tiny_run.results
    assert list(results["models"]) == MODELS and results["baseline"] == "cl"
    assert list(results["seeds"]) == ["0", "1"] and results["config"]["seeds"] == [0, 1]
    assert results["cells"] == [f"{q}->{c}" for q, c in CELLS]
    n = TINY["num_test"]
    for seed, run in results["seeds"].items():
        assert list(run["models"]) == MODELS
        for key, model in run["models"].items():
            for pool in ("cells", "local_pool"):
                assert set(model[pool]) == set(results["cells"]), (seed, key, pool)
                for scores in model[pool].values():
                    assert 0.0 <= scores["recall@1"] <= scores["recall@5"] <= 1.0
                    assert abs(scores["recall@1"] * n - round(scores["recall@1"] * n)) < 1e-9  # n queries
            assert set(model["modality_gap"]["centroid_distance"]) == {"image-text", "image-fused", "text-fused"}
    # each arm trained with its own loss: the per-pair losses it logged
    for arm in ARMS:
        history = results["seeds"]["0"]["models"][arm.key]["train_loss"]
        assert history[-1]["step"] == TINY["steps"]
        assert {k.removeprefix("loss/") for k in history[-1] if k.startswith("loss/")} == PAIRS[arm.pairs], arm
    # the summary is the mean and the sample spread of the per-seed values
    cell = results["summary"]["mixed"]["recall@1"]["gcl"]["text->fused"]
    values = [100 * results["seeds"][s]["models"]["gcl"]["cells"]["text->fused"]["recall@1"] for s in ("0", "1")]
    assert cell["values"] == pytest.approx(values)
    assert cell["mean"] == pytest.approx(sum(values) / 2) and cell["sd"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    assert set(results["comparisons"]["mixed"]) == {"gcl", "gcl-pair"}
    assert results["verdict"]["arm"] == "gcl" and results["verdict"]["verdict"] in ("supported", "not supported")


def test_arms_pass_the_papers_loss_explicitly():
    arms = {arm.key: arm for arm in ARMS}
    assert (arms["cl"].pairs, arms["cl"].negatives) == ("clip", "modality")
    assert (arms["gcl"].pairs, arms["gcl"].negatives) == ("all", "all")
    assert (arms["gcl-pair"].pairs, arms["gcl-pair"].negatives) == ("all", "modality")
    with pytest.raises(TypeError):
        Arm("x", "x", pairs="all")  # negatives has no default: an arm never relies on the library's


def test_cells_match_the_evaluator_and_honour_exclusions(tmp_path):
    """The demo's one-encoding scoring equals `evaluate_retrieval` per task, and a brute-force ranking that
    removes task.exclude and counts a hit when any relevant candidate ranks in the top k."""
    n = 12
    corpus = build_demo_corpus(tmp_path, DemoCorpusConfig(num_train=0, num_test=n, seed=5), progress=False)
    processor = build_demo_processor()
    model = GCLModel.from_backbone(build_demo_backbone(processor.tokenizer, seed=3)).eval()
    tasks = corpus.tasks(k=(1, 5))
    embeddings = encode_test_pool(model, processor, tasks, batch_size=16, progress=False)
    cells = score_cells(tasks, embeddings)
    local = score_local_pools(corpus.tasks(pool="local", k=(1, 5)), embeddings)
    checked = {"image->text", "text->fused", "fused->fused"}  # the full evaluator re-encodes: three cells suffice
    for task, local_task in zip(tasks, corpus.tasks(pool="local", k=(1, 5))):
        name = task.name.split(":", 1)[1]
        if name in checked:
            full = evaluate_retrieval(model, processor, task, k=(1, 5), batch_size=16, show_progress=False)
            assert cells[name] == {"recall@1": full["recall@1"], "recall@5": full["recall@5"]}, name
            alone = evaluate_retrieval(model, processor, local_task, k=(1, 5), batch_size=16, show_progress=False)
            assert local[name]["recall@1"] == pytest.approx(alone["recall@1"]), name
        q_label = name.split("->")[0]
        scores = embeddings.queries[q_label] @ embeddings.corpus.T
        ids = list(task.corpus["id"])
        hits = {1: 0, 5: 0}
        for row, qid in enumerate(task.queries["id"]):
            for excluded in task.exclude[qid]:
                scores[row, ids.index(excluded)] = -torch.inf
            best = max(float(scores[row, ids.index(r)]) for r in task.qrels[qid])
            rank = int((scores[row] > best).sum())
            hits[1] += rank < 1
            hits[5] += rank < 5
        assert cells[name]["recall@1"] == pytest.approx(hits[1] / n)
        assert cells[name]["recall@5"] == pytest.approx(hits[5] / n)


def test_exclusions_remove_the_other_modalities_right_answers(tmp_path):
    """Synthetic embeddings where each query equals its own item's candidate of the query's modality: with
    the exclusions every cell is perfect; without them, only the cells whose query and candidate modality
    agree are (an image query's nearest candidate is then its own picture, never its caption)."""
    n = 8
    corpus = build_demo_corpus(tmp_path, DemoCorpusConfig(num_train=0, num_test=n, seed=2), progress=False)
    tasks = corpus.tasks(k=(1, 5))
    items = torch.eye(n + 3)[:n]
    offset = {label: torch.eye(n + 3)[n + j] for j, label in enumerate(("image", "text", "fused"))}
    embed = {label: torch.nn.functional.normalize(items + 0.3 * offset[label], dim=1) for label in offset}
    order = [(cid.split(":")[1], int(cid.split(":")[0].split("-")[1])) for cid in tasks[0].corpus["id"]]
    pool = torch.stack([embed[label][i] for label, i in order])
    embeddings = PoolEmbeddings(corpus=pool, queries=embed, candidates=embed)
    excluded = score_cells(tasks, embeddings)
    strict = score_cells(corpus.tasks(k=(1, 5), exclude_counterparts=False), embeddings)
    for q, c in CELLS:
        assert excluded[f"{q}->{c}"]["recall@1"] == 1.0, (q, c)
        assert strict[f"{q}->{c}"]["recall@1"] == (1.0 if q == c else 0.0), (q, c)


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        DemoConfig(num_train=10, batch_size=32)
    with pytest.raises(ValueError, match="steps"):
        DemoConfig(steps=-1)
    with pytest.raises(ValueError, match="seeds"):
        DemoConfig(seeds=(1, 1))
    with pytest.raises(ValueError, match="multiple of 4"):
        DemoConfig(num_test=30)
    with pytest.raises(ValueError, match="unique"):
        DemoConfig(arms=(Arm("cl", "a", "clip", "modality"), Arm("cl", "b", "all", "all")))
    quick, default = DemoConfig.quick(), DemoConfig()
    assert quick.num_train < default.num_train and quick.steps < default.steps and len(default.seeds) >= 3
    bigger = DemoConfig(linked_objects=3, text_only_objects=2)
    assert bigger.backbone.max_length > default.backbone.max_length  # room for longer captions


def test_cli_arguments():
    parser = build_parser()
    config = config_from_args(parser.parse_args(["--quick", "--steps", "7", "--seeds", "3,4", "--no-plot",
                                                 "--output-dir", "out"]))
    quick = DemoConfig.quick()
    assert (config.steps, config.seeds, config.plot, config.output_dir) == (7, (3, 4), False, "out")
    assert (config.num_train, config.pretrain_steps, config.batch_size) == (
        quick.num_train, quick.pretrain_steps, quick.batch_size)
    # a value equal to the full default still overrides the quick preset
    assert config_from_args(parser.parse_args(["--quick", "--steps", str(DemoConfig().steps)])).steps == DemoConfig().steps
    assert config_from_args(parser.parse_args([])) == DemoConfig()
    for bad in (["--steps", "many"], ["--seeds", "a,b"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    assert "default: 0,1,2" in parser.format_help()


def test_quick_cli_path_end_to_end(tmp_path, capsys):
    """`gcl-hf demo --quick ...` through gcl_hf.demo.run.main (sizes shrunk by flags to stay fast), and the
    `gcl-hf` dispatcher's argument errors."""
    code = main(["--quick", "--output-dir", str(tmp_path), "--num-train", "96", "--num-test", "8",
                 "--pretrain-steps", "2", "--steps", "1", "--batch-size", "32", "--seeds", "0,1", "--threads", "1",
                 "--no-progress", "--no-plot", "--gallery-queries", "1"])
    assert code == 0
    out = capsys.readouterr().out
    for q, c in CELLS:
        assert f"{q} → {c}" in out
    assert "mixed pool" in out and "local pools" in out and "verdict" in out and "gallery.html" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["num_test"] == 8 and results["config"]["pretrain_warmup_steps"] == 6  # the quick preset
    assert not (tmp_path / "demo.png").exists() and (tmp_path / "gallery.html").exists()
    from gcl_hf.cli import main as gcl_hf_main

    with pytest.raises(SystemExit) as exc:  # an invalid combination is an argument error, not a traceback
        gcl_hf_main(["demo", "--num-train", "8", "--batch-size", "32", "--output-dir", str(tmp_path)])
    assert exc.value.code == 2
