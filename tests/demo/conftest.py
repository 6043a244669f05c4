"""Shared demo fixture: one tiny demo run (2 seeds, all arms, plot and gallery), reused by the pipeline,
report, plot and gallery tests."""

from __future__ import annotations

import pytest
import torch

#: Much smaller than --quick: the whole pipeline (2 seeds, 4 models) in seconds.
TINY = {"seeds": (0, 1), "num_train": 160, "num_test": 16, "pretrain_steps": 6, "steps": 3, "batch_size": 32,
        "eval_batch_size": 64, "num_threads": 1, "progress": False, "gallery_queries": 2}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    from gcl_hf.demo.config import DemoConfig
    from gcl_hf.demo.pipeline import run_demo

    threads = torch.get_num_threads()
    result = run_demo(DemoConfig(output_dir=str(tmp_path_factory.mktemp("demo")), **TINY))
    assert torch.get_num_threads() == threads  # the run's thread setting is restored
    return result
