"""`gcl-hf demo`'s command line: flags checked before any work (one line, exit status 2), a verdict that never
wraps mid-phrase, piped tables without trailing spaces."""

from __future__ import annotations

import io

import pytest

from gcl_hf.demo.config import DemoConfig
from gcl_hf.demo.report import print_report, verdict_lines, verdict_text
from gcl_hf.demo.run import main


@pytest.mark.parametrize("flags, named", [(["--seeds=-1"], "--seeds"), (["--lr", "nan"], "--lr"),
                                          (["--threads", "-3"], "--threads"), (["--batch-size", "0"], "--batch-size"),
                                          (["--lr", "inf"], "--lr")])
def test_bad_flags_are_one_line_before_any_work(flags, named, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(["--quick", "--output-dir", str(out), *flags])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gcl-hf demo: error: {named} "), err
    assert not out.exists()  # nothing ran


def test_config_refuses_what_the_flags_refuse():
    for bad in ({"seeds": (-1,)}, {"lr": float("nan")}, {"pretrain_lr": 0.0}, {"num_threads": 0},
                {"weight_decay": float("inf")}):
        with pytest.raises(ValueError):
            DemoConfig.quick(**bad)


def test_verdict_lines_break_at_phrases(tiny_run):
    text = verdict_text(tiny_run.results)
    lines = verdict_lines(tiny_run.results, width=60)
    assert len(lines) > 1 and " ".join(line.strip() for line in lines) == text
    assert all(len(line) <= 60 or "; " not in line.strip() for line in lines)


def test_piped_report_has_no_trailing_spaces(tiny_run):
    from rich.console import Console

    sink = io.StringIO()
    print_report(tiny_run.results, Console(file=sink, width=130, color_system=None))
    lines = sink.getvalue().splitlines()
    assert len(lines) > 20 and not [line for line in lines if line != line.rstrip()]
    assert any(line.startswith("verdict (+GCL vs +CL") for line in lines[-3:])
