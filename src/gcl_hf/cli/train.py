"""`gcl-hf train`: fine-tune a CLIP-like checkpoint with GCL on image–caption pairs.

Every field of `ModelArguments`, `DataArguments` and `GCLTrainingArguments` is a flag (HfArgumentParser), spelt
with underscores or dashes (``--per_device_train_batch_size`` = ``--per-device-train-batch-size``;
``--model`` = ``--model_name_or_path``); a single ``.json`` / ``.yaml`` argument is read as a file of those
flags. Works under ``accelerate launch`` and ``torchrun`` (``accelerate launch -m gcl_hf.cli train ...`` or
``examples/train_gcl.py``).

``--output_dir`` is required. ``gcl-hf train --help`` lists gcl-hf's own flags at once; ``--help-all`` adds
every transformers `TrainingArguments` flag (it loads transformers). Outputs in ``--output_dir``: the `GCLModel` (``save_pretrained``), with LoRA also ``adapter/`` (adapter + trained
temperature), and with ``--save_backbone`` (default) ``backbone/``: the merged backbone as a plain checkpoint of
its own class (``CLIPModel.from_pretrained(output_dir + "/backbone")``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

from gcl_hf.cli.common import CLIError, GCLArgumentParser
from gcl_hf.errors import ERRORS_MODES, ErrorMode

__all__ = ["DataArguments", "ModelArguments", "build_model", "default_num_workers", "main", "parse_args", "run"]

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Which backbone to fine-tune."""

    model_name_or_path: str = field(
        metadata={"help": "A CLIP-like checkpoint (Hub id such as openai/clip-vit-base-patch32, or a local "
                          "directory), or a saved GCLModel directory to continue from.", "aliases": ["--model"]}
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    processor_name_or_path: str | None = field(
        default=None, metadata={"help": "Processor to use (default: the model's own)."}
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention kernel of the backbone: 'sdpa', 'eager', 'flash_attention_2'."}
    )
    save_backbone: bool = field(
        default=True,
        metadata={"help": "Also write the merged backbone to OUTPUT_DIR/backbone as a plain checkpoint of its own "
                          "class (e.g. CLIPModel), usable without gcl-hf."},
    )


@dataclass
class DataArguments:
    """Where the image–caption pairs come from (see `gcl_hf.data.load_image_text_pairs`)."""

    train_data: str = field(
        metadata={"help": "Training pairs: an imagefolder with metadata.jsonl/csv, a JSON/JSONL list (e.g. LLaVA's "
                          "LCS-558K blip_laion_cc_sbu_558k.json), a CSV/parquet file, or a Hub dataset name."}
    )
    image_root: str | None = field(
        default=None, metadata={"help": "Folder that relative image paths resolve against (default: the data "
                                        "file's folder)."}
    )
    data_format: str | None = field(
        default=None,
        metadata={"help": "Force the source format instead of detecting it.",
                  "choices": ["imagefolder", "llava", "json", "csv", "parquet", "hub", "dataset"]},
    )
    data_revision: str | None = field(default=None, metadata={"help": "Revision of a Hub dataset."})
    data_split: str = field(default="train", metadata={"help": "Split of a Hub dataset or imagefolder."})
    caption_turn: int = field(
        default=1, metadata={"help": "LLaVA records: the conversation turn holding the caption."}
    )
    data_errors: ErrorMode = field(
        default="raise",
        metadata={"help": "Malformed records (missing field, empty caption) when loading: 'raise' naming the "
                          "file, record and field, or 'skip' and count them.", "choices": list(ERRORS_MODES)},
    )
    # the vocabulary of gcl_hf.data.validation.parse_check_images (spelled out: --help must not import torch;
    # tests/cli/test_train.py keeps the two in step)
    check_images: str = field(
        default="none",
        metadata={"help": "Check image files before training: 'none' (fail or skip when a batch meets one), "
                          "'exists', or 'decode' (decode every image; slow). 'no' and 'open' are the old names.",
                  "choices": ["none", "exists", "decode", "no", "open"]},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N pairs only (quick runs)."}
    )
    eval_benchmark: str | None = field(
        default=None, metadata={"help": "Retrieval benchmark evaluated during training: 'mbeir', 'mmeb' or 'covr' "
                                        "(set --eval_strategy steps/epoch)."}
    )
    eval_benchmark_root: str | None = field(
        default=None, metadata={"help": "Local directory (or Hub repo) of the evaluation benchmark."}
    )
    eval_benchmark_options: str | None = field(
        default=None, metadata={"help": "JSON object of loader options, e.g. '{\"tasks\": [\"mscoco_task0\"]}'."}
    )


#: The training flags `gcl-hf train --help` names without loading transformers (all: --help-all).
_TRAINING_FLAGS = (
    ("--output_dir DIR", "where the model, checkpoints and logs go (required)"),
    ("--resume_from_checkpoint DIR|last", "continue from a checkpoint directory, or 'last': the newest complete "
                                          "checkpoint in --output_dir"),
    ("--per_device_train_batch_size N", "pairs per device and step (each pair's negatives: the other pairs of the "
                                        "batch; default 8)"),
    ("--learning_rate, --num_train_epochs, --max_steps, --save_steps, ...", "every transformers TrainingArguments "
                                                                            "flag"),
    ("--pairs, --pair_weights, --negatives, --objective, --fusion", "the GCL loss (default: the model config's)"),
    ("--lora_r, --lora_alpha, --lora_dropout, --lora_target_modules", "LoRA instead of full fine-tuning"),
    ("--gradient_cache_chunk_size, --freeze_vision, --freeze_text, --image_errors, ...", "memory, what trains, "
                                                                                          "bad images"),
)


def _help_parser() -> GCLArgumentParser:
    """`gcl-hf train --help` without transformers: the model and data flags in full, the training flags named."""
    epilog = "training flags (gcl-hf train --help-all lists all of them with their defaults):\n" + "\n".join(
        f"  {flag}\n      {text}" for flag, text in _TRAINING_FLAGS)
    parser = GCLArgumentParser(prog="gcl-hf train", description=__doc__, epilog=epilog, add_help=False)
    parser.add_argument("-h", "--help", action="help", help="show this help message and exit")
    parser.add_argument("--help-all", action="store_true", help="also list every TrainingArguments flag")
    for cls in (ModelArguments, DataArguments):
        group = parser.add_argument_group(cls.__doc__.strip().rstrip("."))
        for f in dataclasses.fields(cls):
            meta = dict(f.metadata)
            flags = [f"--{f.name}", *meta.get("aliases", [])]
            default = None if f.default is dataclasses.MISSING else f.default
            kwargs: dict[str, Any] = {"help": meta.get("help", ""), "default": default}
            if "choices" in meta:
                kwargs["choices"] = meta["choices"]
            if f.default is dataclasses.MISSING:
                kwargs["help"] += " (required)"
            group.add_argument(*flags, **kwargs)
    return parser


def _given(argv: list[str], flag: str) -> bool:
    names = (flag, flag.replace("_", "-"))
    return any(a == n or a.startswith(n + "=") for a in argv for n in names)


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, Any]:
    """Parse flags (or one ``.json`` / ``.yaml`` file of them) into the three argument dataclasses.

    ``--output_dir`` is required (one ``error:`` line, exit status 2, instead of transformers' silent
    ``trainer_output``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv) and "--help-all" not in argv:
        _help_parser().parse_args(["--help"])  # exits
    argv = ["--help" if a == "--help-all" else a for a in argv]
    from transformers import HfArgumentParser

    from gcl_hf.training.arguments import GCLTrainingArguments

    class _Parser(HfArgumentParser):
        def error(self, message: str):  # one line, as every gcl-hf command reports a bad argument
            self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    parser = _Parser((ModelArguments, DataArguments, GCLTrainingArguments),
                     prog="gcl-hf train", description=__doc__.split("\n\n")[0])
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        path = os.path.abspath(argv[0])
        if not os.path.isfile(path):
            parser.error(f"{argv[0]}: no such file of flags")
        given = _file_keys(path)
        if "output_dir" not in given:
            parser.error(f"{argv[0]}: output_dir is required (where the model, checkpoints and logs go)")
        read = parser.parse_json_file if path.endswith(".json") else parser.parse_yaml_file
        return read(path)
    try:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as exc:  # unknown flags, or argument combinations the dataclasses reject
        parser.error(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
    if not _given(argv, "--output_dir"):
        parser.error("--output_dir is required (where the model, checkpoints and logs go)")
    if not any(a.startswith(("--dataloader_num_workers", "--dataloader-num-workers")) for a in argv):
        training_args.dataloader_num_workers = default_num_workers()
    return model_args, data_args, training_args


def _file_keys(path: str) -> set[str]:
    import yaml

    with open(path, encoding="utf-8") as handle:
        data = json.load(handle) if path.endswith(".json") else yaml.safe_load(handle)
    return set(data) if isinstance(data, dict) else set()


def default_num_workers() -> int:
    """Dataloader workers per process when ``--dataloader_num_workers`` is not given: images are decoded in the
    workers, so the CPUs of the machine are shared among the local processes (at most 8 each)."""
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, (os.cpu_count() or 2) // max(1, local_processes) - 1))


def build_model(model_args: ModelArguments, training_args: Any):
    """A `GCLModel` from a saved GCL directory, or wrapping a backbone checkpoint with
    ``GCLModel.from_backbone(..., **training_args.model_overrides())`` (which also decides what the backbone
    implies, e.g. SigLIP's sigmoid objective)."""
    from transformers import AutoConfig

    from gcl_hf.modeling.loading import load_backbone
    from gcl_hf.modeling.model import GCLModel

    kwargs: dict[str, Any] = {"revision": model_args.revision}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.revision,
                                        trust_remote_code=False)
    if config.model_type == "gcl":
        return GCLModel.from_pretrained(model_args.model_name_or_path, allow_pickle=training_args.allow_pickle, **kwargs)
    backbone = load_backbone(model_args.model_name_or_path, allow_pickle=training_args.allow_pickle, **kwargs)
    return GCLModel.from_backbone(backbone, **training_args.model_overrides())


def _load_eval_tasks(data_args: DataArguments) -> list[Any]:
    if not data_args.eval_benchmark:
        return []
    from gcl_hf.benchmarks import load_benchmark

    options = json.loads(data_args.eval_benchmark_options) if data_args.eval_benchmark_options else {}
    if not isinstance(options, dict):
        raise ValueError(f"--eval_benchmark_options must be a JSON object, got {data_args.eval_benchmark_options!r}")
    return load_benchmark(data_args.eval_benchmark, data_args.eval_benchmark_root, **options)


def run(model_args: ModelArguments, data_args: DataArguments, training_args: Any) -> dict[str, Any]:
    """Load data and model, train with `GCLTrainer`, save; returns the train metrics and the output paths. The
    trainer's `~GCLTrainer.end_training` runs last, on success or error (under several processes it ends the group).

    A local model directory is recorded by its absolute path (so an adapter trained from it loads from any
    directory); a model that is neither local nor reachable is one error naming it and the Hub cache."""
    from gcl_hf.hub.adapter import portable_model_path
    from gcl_hf.hub.loading import check_model_available
    from gcl_hf.modeling.loading import load_processor

    from gcl_hf.data.collator import GCLCollator
    from gcl_hf.data.pairs import load_image_text_pairs
    from gcl_hf.training.trainer import GCLTrainer

    model_args.model_name_or_path = portable_model_path(model_args.model_name_or_path)
    model_args.processor_name_or_path = portable_model_path(model_args.processor_name_or_path)
    check_model_available(model_args.model_name_or_path, revision=model_args.revision)
    if model_args.processor_name_or_path:
        check_model_available(model_args.processor_name_or_path)
    processor = load_processor(model_args.processor_name_or_path or model_args.model_name_or_path,
                               revision=model_args.revision)
    # data loading reads the source columns and renames them to "image" / "text"
    with training_args.main_process_first(desc="loading the training pairs"):
        train_dataset = load_image_text_pairs(
            data_args.train_data,
            image_root=data_args.image_root,
            image_column=training_args.image_column,
            caption_column=training_args.caption_column,
            split=data_args.data_split,
            revision=data_args.data_revision,
            format=data_args.data_format,
            caption_turn=data_args.caption_turn,
            check_images=data_args.check_images,
            errors=data_args.data_errors,
        )
    if data_args.max_train_samples is not None:
        train_dataset = train_dataset.select(range(min(data_args.max_train_samples, len(train_dataset))))
    model = build_model(model_args, training_args)
    lora = training_args.lora_config(model)
    if lora is not None:
        from gcl_hf.modeling.lora import check_lora_targets

        try:
            check_lora_targets(model.backbone, lora.target_modules)
        except ValueError as exc:
            raise CLIError(f"--lora_target_modules: {exc}") from exc
    collator = GCLCollator.for_model(model, processor, image_column="image", text_column="text",
                                     errors=training_args.image_errors)
    trainer = GCLTrainer(
        model,
        training_args,
        train_dataset=train_dataset,
        data_collator=collator,
        processing_class=processor,
        eval_tasks=_load_eval_tasks(data_args),
    )
    try:
        return _train_and_save(trainer, model_args, training_args, processor)
    except BaseException as exc:
        if training_args.world_size > 1:  # the finished frames inside train() hold the DDP module: let it go
            traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        trainer.end_training()


def _train_and_save(trainer: Any, model_args: ModelArguments, training_args: Any, processor: Any) -> dict[str, Any]:
    from gcl_hf.modeling.model import is_peft_model

    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    resumed = getattr(trainer, "resumed_from", None)
    if resumed and "train_loss" in result.metrics:  # Trainer's train_loss covers the resumed steps only
        from gcl_hf.training.reports import whole_run_loss

        with open(os.path.join(resumed, "trainer_state.json"), encoding="utf-8") as handle:
            start = int(json.load(handle)["global_step"])
        result.metrics["train_loss_whole_run"] = whole_run_loss(
            trainer.state.log_history, result.metrics["train_loss"], start, trainer.state.global_step)
    trainer.save_model()
    trainer.save_state()
    outputs: dict[str, Any] = {"metrics": result.metrics, "model": training_args.output_dir}
    if is_peft_model(trainer.model.backbone):
        outputs["adapter"] = trainer.save_adapter(os.path.join(training_args.output_dir, "adapter"))
    if model_args.save_backbone:
        backbone_dir = os.path.join(training_args.output_dir, "backbone")
        if training_args.should_save:
            trainer.model.save_backbone(backbone_dir)
            processor.save_pretrained(backbone_dir)
        outputs["backbone"] = backbone_dir
    if trainer.eval_tasks:
        outputs["eval"] = trainer.evaluate()
    return outputs


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gcl-hf train``; returns the exit status."""
    model_args, data_args, training_args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if training_args.should_log else logging.WARNING)
    outputs = run(model_args, data_args, training_args)
    if training_args.should_save:
        saved = ", ".join(f"{k}: {v}" for k, v in outputs.items() if k in ("model", "adapter", "backbone"))
        metrics = outputs["metrics"]
        loss = metrics.get("train_loss_whole_run", metrics.get("train_loss", float("nan")))
        print(f"gcl-hf train: done ({loss:.4f} mean loss over the run); {saved}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
