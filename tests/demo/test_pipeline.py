"""`gcl-hf demo`: the pipeline (tiny config), its determinism, the evaluator it uses, the table, plot and CLI."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from gcl_hf import GCLModel
from gcl_hf.demo.backbone import build_demo_backbone, build_demo_processor
from gcl_hf.demo.corpus import DemoCorpusConfig, build_demo_corpus
from gcl_hf.demo.pipeline import (
    ARMS,
    CELLS,
    Arm,
    DemoConfig,
    comparable,
    encode_test_pool,
    run_demo,
    score_cells,
)
from gcl_hf.demo.report import CELL_GROUPS, render_table, table_text
from gcl_hf.demo.run import build_parser, config_from_args
from gcl_hf.retrieval.evaluation import evaluate_retrieval

#: Smaller than --quick: the whole pipeline in a few seconds.
TINY = dict(num_train=160, num_test=16, pretrain_steps=6, steps=3, batch_size=32, eval_batch_size=64,
            num_threads=1, progress=False)
PAIRS = {"clip": {"image->text", "text->image"},
         "all": {"image->text", "text->image", "image->fused", "fused->image", "text->fused", "fused->text"}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    threads = torch.get_num_threads()
    first = run_demo(DemoConfig(output_dir=str(tmp_path_factory.mktemp("demo-a")), **TINY))
    second = run_demo(DemoConfig(output_dir=str(tmp_path_factory.mktemp("demo-b")), **TINY))
    assert torch.get_num_threads() == threads  # the run's thread setting is restored
    return first, second


def test_same_seed_same_results(runs):
    first, second = runs
    on_disk = [json.loads(open(r.results_path).read()) for r in runs]
    assert on_disk[0] == first.results and on_disk[1] == second.results
    assert comparable(on_disk[0]) == comparable(on_disk[1])
    assert comparable(on_disk[0])["models"]["gcl"]["cells"]  # not vacuously equal
    # the arms really trained differently from one start: their embeddings differ
    emb = first.embeddings
    assert not torch.equal(emb["clip"].corpus, emb["gcl"].corpus)
    assert not torch.equal(emb["gcl"].corpus, emb["gcl-all"].corpus)
    assert not torch.equal(emb["pretrained"].corpus, emb["clip"].corpus)


def test_results_cover_nine_cells_for_every_model(runs):
    results = runs[0].results
    assert list(results["models"]) == ["pretrained", "clip", "gcl", "gcl-all"]
    assert results["baseline"] == "clip"
    assert results["cells"] == [f"{q}->{c}" for q, c in CELLS] and len(CELLS) == 9
    for key, model in results["models"].items():
        assert set(model["cells"]) == set(results["cells"]), key
        for cell, scores in model["cells"].items():
            assert set(scores) == {"recall@1", "recall@5"}
            assert 0.0 <= scores["recall@1"] <= scores["recall@5"] <= 1.0, (key, cell)
            # 16 queries per cell: recall is a multiple of 1/16
            assert abs(scores["recall@5"] * 16 - round(scores["recall@5"] * 16)) < 1e-9
        gap = model["modality_gap"]
        assert set(gap["centroid_distance"]) == {"image-text", "image-fused", "text-fused"}
        assert set(model["local_pool"]) == set(results["cells"])
    # each arm trained with its own loss: the per-pair losses it logged
    for arm in ARMS:
        history = results["models"][arm.key]["train_loss"]
        assert history and history[-1]["step"] == TINY["steps"]
        logged = {k.removeprefix("loss/") for k in history[-1] if k.startswith("loss/")}
        assert logged == PAIRS[arm.pairs], arm
    assert {k.removeprefix("loss/") for k in results["models"]["pretrained"]["train_loss"][-1]
            if k.startswith("loss/")} == PAIRS["clip"]
    assert results["config"]["steps"] == TINY["steps"] and results["timings_s"]["total"] > 0


def test_table_has_nine_cells_times_arms_times_two_recalls(runs):
    results = runs[0].results
    table = render_table(results)
    headers = [str(c.header) for c in table.columns]
    # cell label + 4 models (pre-trained, 3 arms) + a delta column for each arm compared with CLIP
    assert len(headers) == 1 + 4 + 2
    assert all("R@1" in h and "R@5" in h for h in headers[1:])
    assert table.row_count == 9 + len(CELL_GROUPS) + 2
    labels = list(table.columns[0].cells)
    assert labels[:9] == [f"{q} → {c}" for q, c in CELLS]
    clip_column = list(table.columns[2].cells)
    for row, (q, c) in enumerate(CELLS):
        scores = results["models"]["clip"]["cells"][f"{q}->{c}"]
        assert clip_column[row].split() == [f"{100 * scores['recall@1']:.1f}", f"{100 * scores['recall@5']:.1f}"]
    text = table_text(results, width=100)
    assert "image → fused" in text and "GCL (paper)" in text and "Δ vs CLIP" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_plot_is_a_png(runs):
    path = runs[0].plot_path
    assert path and path.endswith("demo.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.width > 800 and image.height > 400


def test_cells_match_the_evaluator_and_honour_exclusions(tmp_path):
    """The demo's one-encoding scoring equals `evaluate_retrieval` per task, and equals a brute-force
    ranking in which each query's own other-modality views are removed (task.exclude)."""
    corpus = build_demo_corpus(tmp_path, DemoCorpusConfig(num_train=0, num_test=12, seed=5), progress=False)
    processor = build_demo_processor()
    model = GCLModel.from_backbone(build_demo_backbone(processor.tokenizer, seed=3)).eval()
    tasks = corpus.tasks(k=(1, 5))
    embeddings = encode_test_pool(model, processor, tasks, batch_size=16, progress=False)
    cells = score_cells(tasks, embeddings)
    n = 12
    for task in tasks:
        name = task.name.split(":", 1)[1]
        full = evaluate_retrieval(model, processor, task, k=(1, 5), batch_size=16, show_progress=False)
        assert cells[name] == {"recall@1": full["recall@1"], "recall@5": full["recall@5"]}, name
        # brute force: rank of the relevant candidate after removing the excluded ids
        q_label, c_label = name.split("->")
        queries = embeddings.queries[q_label]
        scores = queries @ embeddings.corpus.T
        ids = list(task.corpus["id"])
        hits = {1: 0, 5: 0}
        for row, qid in enumerate(task.queries["id"]):
            assert len(task.exclude[qid]) == 2
            for excluded in task.exclude[qid]:
                scores[row, ids.index(excluded)] = -torch.inf
            (target,) = task.qrels[qid]
            rank = int((scores[row] > scores[row, ids.index(target)]).sum())
            hits[1] += rank < 1
            hits[5] += rank < 5
        assert cells[name]["recall@1"] == pytest.approx(hits[1] / n)
        assert cells[name]["recall@5"] == pytest.approx(hits[5] / n)


def test_exclusions_remove_the_querys_own_other_views(tmp_path):
    """Synthetic embeddings where each query equals its own item's candidate of the query's modality: with
    task.exclude every cell is perfect; without it, only the diagonal cells are."""
    from gcl_hf.demo.corpus import MODALITY_LABELS
    from gcl_hf.demo.pipeline import PoolEmbeddings

    n = 10
    corpus = build_demo_corpus(tmp_path, DemoCorpusConfig(num_train=0, num_test=n, seed=2), progress=False)
    tasks = corpus.tasks(k=(1, 5))
    items = torch.eye(n + 3)[:n]
    offset = {label: torch.eye(n + 3)[n + j] for j, label in enumerate(("image", "text", "fused"))}
    embed = {label: torch.nn.functional.normalize(items + 0.3 * offset[label], dim=1) for label in offset}
    pool_labels = [MODALITY_LABELS[m] for m in tasks[0].corpus["modality"]]
    pool_items = [int(i.split(":")[0].split("-")[1]) for i in tasks[0].corpus["id"]]
    pool = torch.stack([embed[label][item] for label, item in zip(pool_labels, pool_items)])
    embeddings = PoolEmbeddings(corpus=pool, queries=embed, candidates=embed)
    excluded = score_cells(tasks, embeddings)
    strict = score_cells(corpus.tasks(k=(1, 5), exclude_own_views=False), embeddings)
    for q, c in CELLS:
        assert excluded[f"{q}->{c}"]["recall@1"] == 1.0
        assert strict[f"{q}->{c}"]["recall@1"] == (1.0 if q == c else 0.0)
        assert strict[f"{q}->{c}"]["recall@5"] == 1.0


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        DemoConfig(num_train=10, batch_size=32)
    with pytest.raises(ValueError, match="steps"):
        DemoConfig(steps=-1)
    with pytest.raises(ValueError, match="unique"):
        DemoConfig(arms=(Arm("clip", "a", pairs="clip"), Arm("clip", "b")))
    quick = DemoConfig.quick()
    default = DemoConfig()
    assert quick.num_train < default.num_train and quick.steps < default.steps


def test_cli_arguments():
    parser = build_parser()
    config = config_from_args(parser.parse_args(["--quick", "--steps", "7", "--seed", "3", "--no-plot",
                                                 "--output-dir", "out"]))
    quick = DemoConfig.quick()
    assert (config.steps, config.seed, config.plot, config.output_dir) == (7, 3, False, "out")
    assert (config.num_train, config.pretrain_steps, config.batch_size) == (
        quick.num_train, quick.pretrain_steps, quick.batch_size)
    default = config_from_args(parser.parse_args([]))
    assert default == DemoConfig()
    with pytest.raises(SystemExit):
        parser.parse_args(["--steps", "many"])


def test_gcl_hf_demo_command_end_to_end(tmp_path, capsys):
    from gcl_hf.cli import main

    code = main(["demo", "--output-dir", str(tmp_path), "--num-train", "96", "--num-test", "8",
                 "--pretrain-steps", "2", "--steps", "1", "--batch-size", "32", "--threads", "1",
                 "--no-progress", "--no-plot"])
    assert code == 0
    out = capsys.readouterr().out
    for q, c in CELLS:
        assert f"{q} → {c}" in out
    assert "results.json" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["num_test"] == 8 and not (tmp_path / "demo.png").exists()
    # an invalid combination is an argument error (exit status 2), not a traceback
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--num-train", "8", "--batch-size", "32", "--output-dir", str(tmp_path)])
    assert exc.value.code == 2
