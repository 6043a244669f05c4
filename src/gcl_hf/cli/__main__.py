"""``python -m gcl_hf.cli <command>`` (what ``accelerate launch -m gcl_hf.cli`` and ``torchrun -m`` run)."""

import sys

from gcl_hf.cli.main import main

sys.exit(main())
