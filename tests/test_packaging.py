"""The built wheel is the whole package: built from the sources, installed into a fresh virtual environment and
run from a directory outside the checkout, it runs the demo (a tiny one), renders a model card from the
packaged template and loads the shipped metric scripts.

One test, marked ``packaging``; it builds offline (``--no-build-isolation``: the setuptools of this environment)
and reuses this environment's dependencies (a ``.pth`` to its site-packages), so it needs no network.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What the package reads at run time besides its modules (tests/hub/test_card.py checks the template is one file).
PACKAGE_DATA = ("gcl_hf/hub/templates/model_card.md.j2", "gcl_hf/retrieval/metrics/recall_at_k/recall_at_k.py",
                "gcl_hf/retrieval/metrics/precision_at_1/precision_at_1.py")
#: The smallest demo that still runs every stage (corpus, pre-training, three arms, evaluation, plot, gallery).
TINY_DEMO = ["--quick", "--seeds", "0", "--num-train", "160", "--num-test", "16", "--pretrain-steps", "4",
             "--steps", "2", "--batch-size", "32", "--gallery-queries", "2", "--threads", "1", "--no-progress"]

CARD_AND_METRICS = """
import json, sys
import gcl_hf
from gcl_hf import GCLModel
from gcl_hf.hub.card import build_model_card, default_template_path
from gcl_hf.metrics import load
from gcl_hf.testing import tiny_clip

card = build_model_card(GCLModel.from_backbone(tiny_clip()), repo_id="me/gcl-tiny", license="apache-2.0")
recall = load("recall_at_k").compute(predictions=[["a", "b"]], references=[["b"]], k=[1, 2])
print(json.dumps({"file": gcl_hf.__file__, "template": str(default_template_path()), "card": str(card),
                  "recall": recall}))
"""


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.packaging
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    # build from a copy of what an sdist holds, so the checkout gets no build/ or egg-info
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
          str(tmp_path / "dist"), str(source)])
    (wheel,) = (tmp_path / "dist").glob("gcl_hf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(PACKAGE_DATA) <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata

    # a fresh venv that sees this environment's dependencies (not its gcl_hf: .pth files there are not run)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    venv_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                     .stdout.strip())
    here = [p for p in {sysconfig.get_paths()["purelib"], *site.getsitepackages()} if Path(p).is_dir()]
    (venv_site / "zz_outer_environment.pth").write_text("\n".join(here) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)])

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    gcl_hf_cli = venv / ("Scripts/gcl-hf.exe" if os.name == "nt" else "bin/gcl-hf")
    assert "gcl-hf 0.1.0" in _run([str(gcl_hf_cli), "--version"], cwd=outside, env=env).stdout
    demo = _run([str(gcl_hf_cli), "demo", *TINY_DEMO, "--output-dir", "out"], cwd=outside, env=env)
    assert "verdict (+GCL vs +CL" in demo.stdout
    assert {"results.json", "demo.png", "gallery.html"} <= {p.name for p in (outside / "out").iterdir()}

    info = json.loads(_run([str(python), "-c", CARD_AND_METRICS], cwd=outside, env=env).stdout.splitlines()[-1])
    assert Path(info["file"]).is_relative_to(venv_site) and Path(info["template"]).is_relative_to(venv_site)
    assert "me/gcl-tiny" in info["card"] and "license: apache-2.0" in info["card"]
    assert info["recall"]
