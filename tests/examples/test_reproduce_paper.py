"""`examples/reproduce_paper/reproduce.py --smoke`: the whole reproduction on a tiny model and benchmark copies.

The script runs in a subprocess exactly as a user runs it; the inputs are a tiny saved CLIP, a LLaVA-format caption
file with a few PNGs, and the M-BEIR / MMEB / CoVR fixtures of ``benchmark_fixtures``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from benchmark_fixtures import write_covr, write_mbeir, write_mmeb, write_png

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "reproduce_paper"
SCRIPT = EXAMPLE / "reproduce.py"
MMEB_SUBSETS = ("MSCOCO_i2t", "MSCOCO_t2i", "CIRR", "WebQA")
BENCHMARKS = ("mbeir_local", "mbeir_global", "mmeb", "covr")


def _load_script():
    spec = importlib.util.spec_from_file_location("reproduce_paper_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_llava(root: Path, n: int = 8) -> Path:
    """LCS-558K's format: ``image`` relative to the image root, the caption in ``conversations[1].value``."""
    records = []
    for i in range(n):
        write_png(root / "images" / f"{i // 4:05d}" / f"{i:09d}.png", 3000 + 7 * i, size=32)
        records.append({
            "id": f"{i:09d}",
            "image": f"{i // 4:05d}/{i:09d}.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWrite a terse but informative summary of the picture."},
                {"from": "gpt", "value": f"a small picture with colour number {i}"},
            ],
        })
    path = root / "blip_laion_cc_sbu_558k.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from gcl_hf.testing import tiny_clip, tiny_processor

    root = tmp_path_factory.mktemp("reproduce")
    tiny_clip(seed=0).save_pretrained(root / "tiny-clip")
    tiny_processor().save_pretrained(root / "tiny-clip")
    from gcl_hf.modeling.vista.testing import tiny_vista, tiny_vista_processor

    vista = tiny_vista(seed=0)
    vista.save_pretrained(root / "tiny-vista")
    vista_processor = tiny_vista_processor()
    vista_processor.tokenizer.model_max_length = vista.config.max_fused_text_length  # as convert-vista sets it
    vista_processor.save_pretrained(root / "tiny-vista")
    train_data = _write_llava(root / "LLaVA-Pretrain")
    mbeir = write_mbeir(root / "M-BEIR")
    write_mmeb(root / "MMEB-eval", subsets=MMEB_SUBSETS)
    write_covr(root / "WebVid-CoVR")
    out = root / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--model", f"tiny={root / 'tiny-clip'}",
           "--model", f"tiny-vista={root / 'tiny-vista'}",
           "--train-data", str(train_data), "--image-root", str(root / "LLaVA-Pretrain" / "images"),
           "--mbeir-root", str(root / "M-BEIR"), "--mmeb-root", str(root / "MMEB-eval"),
           "--mmeb-subsets", *MMEB_SUBSETS, "--covr-root", str(root / "WebVid-CoVR"), "--output-dir", str(out)]
    proc = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"reproduce.py --smoke failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return SimpleNamespace(root=root, out=out, stdout=proc.stdout, mbeir=mbeir,
                           results=json.loads((out / "results.json").read_text()))


def test_every_arm_is_scored_on_every_benchmark(smoke_run):
    models = smoke_run.results["models"]
    assert smoke_run.results["mode"] == "smoke"
    assert set(models) == {f"{m}/{arm}" for m in ("tiny", "tiny-vista") for arm in ("pretrained", "cl", "gcl")}
    n_tasks = {"mbeir_local": len(smoke_run.mbeir["tasks"]), "mbeir_global": len(smoke_run.mbeir["tasks"]),
               "mmeb": len(MMEB_SUBSETS), "covr": 1}
    for key, entry in models.items():
        assert set(entry["benchmarks"]) == set(BENCHMARKS), key
        for bench, scored in entry["benchmarks"].items():
            assert 0.0 <= scored["headline"] <= 100.0, (key, bench, scored["headline"])
            assert len(scored["tasks"]) == n_tasks[bench], (key, bench, list(scored["tasks"]))
    covr = models["tiny/gcl"]["benchmarks"]["covr"]["tasks"]["covr_test"]
    assert set(covr) >= {"recall@1", "recall@5", "recall@10", "recall@50"}
    # M-BEIR's headline is Recall@5, Recall@10 for FashionIQ (the fixtures include fashioniq_task7)
    local = models["tiny/cl"]["benchmarks"]["mbeir_local"]
    expected = [m["recall@10" if "fashioniq" in name else "recall@5"] for name, m in local["tasks"].items()]
    assert local["headline"] == pytest.approx(100 * sum(expected) / len(expected))


def test_cl_and_gcl_train_the_same_way_with_their_own_loss(smoke_run):
    cl = smoke_run.results["models"]["tiny/cl"]["training"]
    gcl = smoke_run.results["models"]["tiny/gcl"]["training"]
    assert smoke_run.results["models"]["tiny/pretrained"]["training"] is None
    assert cl["pairs"] == [["image", "text"], ["text", "image"]] and cl["negatives"] == "modality"
    assert len(gcl["pairs"]) == 6 and gcl["negatives"] == "all"
    for summary in (cl, gcl):
        assert summary["steps"] == 3 and summary["global_batch_size"] == 4 and summary["fusion"] == "sum"
        assert summary["relative_weight_change"] > 1e-4
    assert cl["train_loss"] != pytest.approx(gcl["train_loss"])
    vista = [smoke_run.results["models"][f"tiny-vista/{arm}"]["training"] for arm in ("cl", "gcl")]
    for summary in vista:  # VISTA embeds fused items with its own encoder
        assert summary["fusion"] == "backbone" and summary["steps"] == 3 and summary["relative_weight_change"] > 1e-4
    assert vista[0]["negatives"] == "modality" and vista[1]["negatives"] == "all"


def test_fine_tuned_models_differ_from_the_pretrained_one(smoke_run):
    from gcl_hf import GCLModel
    from gcl_hf.testing import tiny_clip

    start = tiny_clip(seed=0).state_dict()
    weights = {}
    for arm in ("cl", "gcl"):
        model = GCLModel.from_pretrained(smoke_run.out / "models" / "tiny" / arm)
        assert model.config.fusion == "sum"
        weights[arm] = model.backbone.state_dict()
        moved = [n for n, w in weights[arm].items() if n in start and not torch.equal(w, start[n])]
        assert moved, f"{arm}: no backbone weight changed"
    assert any(not torch.equal(weights["cl"][n], weights["gcl"][n]) for n in weights["cl"])


def test_table_puts_the_paper_beside_each_number(smoke_run):
    table = (smoke_run.out / "results.md").read_text()
    assert table in smoke_run.stdout
    for label in ("M-BEIR local", "M-BEIR global + instr.", "MMEB retrieval", "CoVR"):
        assert f"{label} (ours) | {label} (paper)" in table
    rows = [line for line in table.splitlines() if line.startswith("| tiny ")]
    assert [r.split(" | ")[0] for r in rows] == ["| tiny pre-trained", "| tiny +CL", "| tiny +GCL",
                                                  "| tiny Δ (+GCL − +CL)"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert len(cells) == 2 * len(BENCHMARKS)
        assert all(c == "n/a (not found)" for c in cells[1::2])  # no paper number for a tiny model
    assert "SMOKE RUN" in table


def test_paper_numbers_carry_their_source():
    data = json.loads((EXAMPLE / "paper_results.json").read_text())["results"]
    assert set(data) == {"CLIP-SF", "TinyCLIP-SF", "VISTA"}
    for backbone, arms in data.items():
        assert set(arms) == {"pretrained", "cl", "gcl"}
        for arm, cells in arms.items():
            assert set(cells) == set(BENCHMARKS)
            for cell in cells.values():
                if cell is not None:  # a number only with the paper's table and row
                    assert isinstance(cell["value"], (int, float)) and "arXiv 2509.25638" in cell["source"] and (
                        "Table" in cell["source"] or "as quoted in gcl-hf issue 21" in cell["source"]), (backbone, arm)
    assert data["VISTA"]["gcl"]["mbeir_global"]["value"] == 34.06


def test_arguments_fail_early_and_say_what_is_missing(tmp_path, capsys):
    script = _load_script()
    with pytest.raises(SystemExit):
        script.parse_args(["--smoke", "--train-data", "x.json"])
    assert "--smoke needs --model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse_args(["--model", "m", "--train-data", "x.json", "--mbeir-root", "m", "--mmeb-root", "e"])
    assert "benchmark covr needs --covr-root" in capsys.readouterr().err
    cfg, stages, _ = script.parse_args(["--stages", "report", "--output-dir", str(tmp_path)])
    assert stages == ("report",) and [b.label for b in cfg.backbones] == ["CLIP-SF", "TinyCLIP-SF", "VISTA"]
    with pytest.raises(SystemExit):
        script.parse_args(["--stages", "eval", "--mbeir-root", "m", "--mmeb-root", "e", "--covr-root", "c",
                           "--output-dir", str(tmp_path)])
    assert "--model VISTA: vista-base is not a directory" in capsys.readouterr().err
    assert cfg.train.global_batch_size == 630 and cfg.train.learning_rate == 1e-5 and cfg.train.lora_r is None


def test_weight_decay_follows_uniir(tiny_clip):
    from gcl_hf import GCLModel

    model = GCLModel.from_backbone(tiny_clip)
    names = set(_load_script().uniir_decay_names(model))
    shapes = {n: p.ndim for n, p in model.named_parameters()}
    assert "backbone.logit_scale" not in names
    assert "backbone.vision_model.embeddings.class_embedding" not in names  # 1-d: no decay, as in UniIR
    assert names and all(shapes[n] >= 2 for n in names)
    assert {n for n, d in shapes.items() if d >= 2 and "logit_scale" not in n} == names
