"""`gcl-hf --help`, `--version` and every `gcl-hf <command> --help` answer without loading the heavy stack: the
test looks at what the process imported (not at the time it took)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gcl_hf
from gcl_hf.cli import COMMANDS

#: What a help text must not load (each costs seconds; torch alone is hundreds of MB).
HEAVY = ("torch", "transformers", "datasets", "huggingface_hub", "peft", "accelerate", "pyarrow", "evaluate",
         "sentence_transformers", "mteb", "faiss")
#: Where the gcl_hf under test lives (the checkout's src/, or an installed copy).
SRC = Path(gcl_hf.__file__).resolve().parents[1]

_PROBE = """
import json, sys
sys.argv = ["gcl-hf", *ARGS]  # as the console script starts
from gcl_hf.cli import main
try:
    main(ARGS)
except SystemExit:
    pass
print("HEAVY=" + json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))), file=sys.stderr)
"""


def _imported(args: list[str]) -> list[str]:
    code = f"ARGS = {args!r}\nHEAVY = {HEAVY!r}\n" + _PROBE
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    line = next(line for line in done.stderr.splitlines() if line.startswith("HEAVY="))
    assert done.stdout.strip(), done.stderr  # it did answer
    return json.loads(line[len("HEAVY="):])


@pytest.mark.parametrize("args", [["--help"], ["--version"], *([c, "--help"] for c in COMMANDS)],
                         ids=lambda a: " ".join(a))
def test_help_and_version_import_nothing_heavy(args):
    assert _imported(args) == []


def test_a_command_that_runs_registers_the_auto_classes(tmp_path):
    """The lazy start-up must not lose `import gcl_hf`'s promise once a command runs."""
    code = ("import sys; sys.argv = ['gcl-hf']\n"
            "from gcl_hf.cli import main\n"
            "import transformers\n"
            "assert 'gcl' not in transformers.CONFIG_MAPPING\n"
            f"main(['search', '--index', {str(tmp_path)!r}, '--text', 'x'])\n"
            "assert 'gcl' in transformers.CONFIG_MAPPING\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
