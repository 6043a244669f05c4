"""The `gcl-hf` dispatcher and the manners every sub-command shares: one-line errors (``--debug`` for the
traceback), dash/underscore flag spellings, ``--model`` for the model, defaults in ``--help``."""

import json

import pytest
from benchmark_fixtures import write_mbeir

from gcl_hf import GCLModel, cli
from gcl_hf.cli import encode as encode_cli
from gcl_hf.cli import eval as eval_cli
from gcl_hf.cli import search as search_cli
from gcl_hf.cli.common import GCLArgumentParser, normalize_flags
from gcl_hf.cli.push import add_push_arguments, resolve_push_arguments
from gcl_hf.cli.train import parse_args as train_parse_args
from gcl_hf.testing import tiny_clip, tiny_processor


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    GCLModel.from_backbone(tiny_clip(seed=0)).save_pretrained(path)
    tiny_processor().save_pretrained(path)
    return path


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


@pytest.mark.parametrize("command", ["eval", "encode", "search", "push", "train"])
def test_help_shows_defaults(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    expected = {"eval": "(default: 64)", "encode": "(default: 65536)", "search": "(default: 10)",
                "push": "(default: full)", "train": "(default: train)"}[command]
    assert expected in out


# ------------------------------------------------------------------------------------------ errors
def _one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err  # besides progress bars (their own lines): exactly one error line
    lines = [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"{prog}: error: ")
    return lines[0]


def test_missing_benchmark_files_are_one_line(tmp_path, model_dir, capsys):
    code = cli.main(["eval", "--benchmark", "mbeir", "--root", str(tmp_path / "nowhere"), "--model", str(model_dir)])
    assert code == 1
    assert "nowhere" in _one_error_line(capsys, "gcl-hf eval")


def test_malformed_benchmark_row_is_one_line_naming_file_line_field(tmp_path, model_dir, capsys):
    info = write_mbeir(tmp_path / "mbeir", tasks=("mscoco_task0",))
    queries = info["tasks"]["mscoco_task0"]["queries_file"]
    rows = queries.read_text().splitlines()
    bad = json.loads(rows[1])
    bad["query_modality"] = "video"
    queries.write_text("\n".join([rows[0], json.dumps(bad), *rows[2:]]) + "\n")
    code = cli.main(["eval", "--benchmark", "mbeir", "--root", str(tmp_path / "mbeir"), "--model", str(model_dir)])
    assert code == 1
    line = _one_error_line(capsys, "gcl-hf eval")
    assert "mbeir_mscoco_task0_test.jsonl" in line and "line 2" in line and "query_modality" in line


def test_offline_unknown_repo_is_one_line(tmp_path, capsys):
    code = cli.main(["encode", "--model", "nobody/no-such-model", "--pool", str(tmp_path), "--cache-dir",
                     str(tmp_path / "c")])
    assert code == 1
    line = _one_error_line(capsys, "gcl-hf encode")
    assert "nobody/no-such-model" in line and "offline" in line


def test_bad_model_path_and_bad_pool_are_one_line(tmp_path, model_dir, capsys):
    assert cli.main(["encode", "--model", str(tmp_path / "no" / "model"), "--pool", str(tmp_path),
                     "--cache-dir", str(tmp_path / "c")]) == 1
    assert "no such local directory" in _one_error_line(capsys, "gcl-hf encode")
    (tmp_path / "pool.jsonl").write_text('{"text": "no id column"}\n')
    assert cli.main(["encode", "--model", str(model_dir), "--pool", str(tmp_path / "pool.jsonl"),
                     "--cache-dir", str(tmp_path / "c")]) == 1
    assert "missing column 'id'" in _one_error_line(capsys, "gcl-hf encode")


def test_bad_arguments_are_one_line_with_status_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["eval", "--benchmark", "mbeir", "--root", "x", "--model", "y", "--batch_size", "0"])
    assert exit_.value.code == 2
    assert "--batch-size must be >= 1" in _one_error_line(capsys, "gcl-hf eval")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["search", "--index", "x"])
    assert exit_.value.code == 2
    assert "give --text, --image or both" in _one_error_line(capsys, "gcl-hf search")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--model", "x", "--train-data", "y", "--no-such-flag"])
    assert exit_.value.code == 2
    assert "--no-such-flag" in _one_error_line(capsys, "gcl-hf train")


def test_eval_bad_option_names_it(tmp_path, capsys):
    assert cli.main(["eval", "--benchmark", "mbeir", "--root", str(tmp_path), "--model", str(tmp_path),
                     "--option", "pool"]) == 1
    assert "--option 'pool': expected KEY=JSON" in _one_error_line(capsys, "gcl-hf eval")
    with pytest.raises(SystemExit, match="--option 'pool'"):  # called from Python: the message, no traceback
        eval_cli.main(["--benchmark", "mbeir", "--root", str(tmp_path), "--model", str(tmp_path), "--option", "pool"])
    write_mbeir(tmp_path / "mbeir", tasks=("mscoco_task0",))
    assert cli.main(["eval", "--benchmark", "mbeir", "--root", str(tmp_path / "mbeir"), "--model", str(tmp_path),
                     "--option", "colour=1"]) == 1
    assert "--option 'colour': not an option of the mbeir loader" in _one_error_line(capsys, "gcl-hf eval")


@pytest.mark.parametrize("where", ["before", "after", "env"])
def test_debug_shows_the_traceback(tmp_path, where, capsys, monkeypatch):
    argv = ["eval", "--benchmark", "mbeir", "--root", str(tmp_path / "nowhere"), "--model", "m"]
    if where == "env":
        monkeypatch.setenv("GCL_HF_DEBUG", "1")
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"] if where == "after" else argv
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "load_benchmark" in err and "nowhere" in err


def test_demo_takes_both_spellings_too(capsys):
    """The dispatcher hands `gcl-hf demo` dashed flags: --batch_size reaches the demo's --batch-size."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--batch_size", "not-a-number"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--batch-size: invalid int value: 'not-a-number'" in err and "unrecognized" not in err


# ------------------------------------------------------------------------------------------ flag spellings
def test_normalize_flags():
    assert normalize_flags(["--batch_size=4", "--num_workers", "2", "x_y", "--", "--a_b"]) == \
        ["--batch-size=4", "--num-workers", "2", "x_y", "--", "--a_b"]
    known = {"--batch-size", "--keep_me"}
    assert normalize_flags(["--batch_size", "1", "--keep_me", "--other_flag"], known) == \
        ["--batch-size", "1", "--keep_me", "--other_flag"]


@pytest.mark.parametrize("command", ["eval", "encode", "search", "push"])
def test_every_multi_word_flag_takes_both_spellings(command):
    base = {"eval": ["--benchmark", "mbeir", "--root", "r", "--model", "m"],
            "encode": ["--model", "m", "--pool", "p", "--cache-dir", "c"],
            "search": ["--index", "i", "--text", "t"], "push": ["dir", "me/repo"]}[command]
    if command == "push":
        parser = add_push_arguments(GCLArgumentParser(prog="gcl-hf push"))
        parse = parser.parse_args
    else:
        module = {"eval": eval_cli, "encode": encode_cli, "search": search_cli}[command]
        parser, parse = module.build_parser(), module.parse_args
    flags = [a for a in parser._actions if any(s.startswith("--") and "-" in s[2:] for s in a.option_strings)]
    assert flags
    for action in flags:
        flag = next(s for s in action.option_strings if s.startswith("--") and "-" in s[2:])
        value = [] if action.nargs == 0 else [str(action.choices[0]) if action.choices else
                                              "3" if action.type is int else "v"]
        underscored = "--" + flag[2:].replace("-", "_")
        expected = vars(parse(base + [flag, *value]))
        assert vars(parse(base + [underscored, *value])) == expected, flag
        if value:
            assert vars(parse(base + [f"{underscored}={value[0]}"])) == expected, flag


def test_model_flag_everywhere(tmp_path):
    assert eval_cli.parse_args(["--benchmark", "mbeir", "--root", "r", "--model", "m"]).model == "m"
    assert encode_cli.parse_args(["--model", "m", "--pool", "p", "--cache-dir", "c"]).model == "m"
    assert search_cli.parse_args(["--index", "i", "--text", "t", "--model", "m"]).model == "m"
    parser = add_push_arguments(GCLArgumentParser(prog="gcl-hf push"))
    args = resolve_push_arguments(parser, parser.parse_args(["--model", "dir", "--repo_id", "me/x"]))
    assert (args.model_dir, args.repo_id) == ("dir", "me/x")
    args = resolve_push_arguments(parser, parser.parse_args(["dir", "me/x", "--commit_message", "hi"]))
    assert (args.model_dir, args.repo_id, args.commit_message) == ("dir", "me/x", "hi")
    model_args, data_args, training_args = train_parse_args(
        ["--model", "m", "--train-data", "d", "--output-dir", str(tmp_path), "--per-device-train-batch-size", "3",
         "--max_steps", "2", "--dataloader-num-workers", "0"])
    assert (model_args.model_name_or_path, data_args.train_data) == ("m", "d")
    assert (training_args.per_device_train_batch_size, training_args.max_steps) == (3, 2)
    assert training_args.dataloader_num_workers == 0  # the dashed spelling counts as given


def test_empty_candidate_pool_fails_and_writes_no_result(tmp_path, model_dir, capsys):
    # an empty pool used to give recall 0.00 with exit 0, a number the model card would publish
    info = write_mbeir(tmp_path / "mbeir", tasks=("mscoco_task0",))
    info["tasks"]["mscoco_task0"]["pool_file"].write_text("")
    output = tmp_path / "result.json"
    code = cli.main(["eval", "--benchmark", "mbeir", "--root", str(tmp_path / "mbeir"), "--model", str(model_dir),
                     "--output", str(output)])
    assert code == 1 and not output.exists()
    assert "cand_pool.jsonl" in _one_error_line(capsys, "gcl-hf eval")


def test_remote_code_in_a_checkpoint_is_never_run(tmp_path, capsys):
    # hub.load (what every command uses) of a directory whose config points at custom code: the plain class loads,
    # the code never runs, and nothing asks at a prompt
    from gcl_hf import hub

    tiny_clip().save_pretrained(tmp_path)
    tiny_processor().save_pretrained(tmp_path)
    marker = tmp_path / "ran.txt"
    (tmp_path / "custom.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                        "from transformers import CLIPModel as Custom\n")
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "custom.Custom", "AutoConfig": "custom.Custom"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = hub.load(tmp_path)
    assert type(model.backbone).__name__ == "CLIPModel" and not marker.exists()
