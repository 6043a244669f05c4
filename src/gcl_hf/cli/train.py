"""`gcl-hf train`: fine-tune a CLIP-like checkpoint with GCL on image–caption pairs.

Every field of `ModelArguments`, `DataArguments` and `GCLTrainingArguments` is a flag (HfArgumentParser), spelt
with underscores or dashes (``--per_device_train_batch_size`` = ``--per-device-train-batch-size``;
``--model`` = ``--model_name_or_path``); a single ``.json`` / ``.yaml`` argument is read as a file of those
flags. Works under ``accelerate launch`` and ``torchrun`` (``accelerate launch -m gcl_hf.cli train ...`` or
``examples/train_gcl.py``).

Outputs in ``--output_dir``: the `GCLModel` (``save_pretrained``), with LoRA also ``adapter/`` (adapter + trained
temperature), and with ``--save_backbone`` (default) ``backbone/``: the merged backbone as a plain checkpoint of
its own class (``CLIPModel.from_pretrained(output_dir + "/backbone")``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

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
    data_errors: str = field(
        default="raise",
        metadata={"help": "Malformed records (missing field, empty caption) when loading: 'raise' naming the "
                          "file, record and field, or 'skip' and count them.", "choices": ["raise", "skip"]},
    )
    check_images: str = field(
        default="no",
        metadata={"help": "Check image files before training: 'no' (fail or skip when a batch meets one), "
                          "'exists', or 'open' (decode every image; slow).", "choices": ["no", "exists", "open"]},
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


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, Any]:
    """Parse flags (or one ``.json`` / ``.yaml`` file of them) into the three argument dataclasses."""
    from transformers import HfArgumentParser

    from gcl_hf.training.arguments import GCLTrainingArguments

    class _Parser(HfArgumentParser):
        def error(self, message: str):  # one line, as every gcl-hf command reports a bad argument
            self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser((ModelArguments, DataArguments, GCLTrainingArguments),
                     prog="gcl-hf train", description=__doc__.split("\n\n")[0])
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(os.path.abspath(argv[0]))
    try:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as exc:  # unknown flags, or argument combinations the dataclasses reject
        parser.error(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
    if not any(a.startswith(("--dataloader_num_workers", "--dataloader-num-workers")) for a in argv):
        training_args.dataloader_num_workers = default_num_workers()
    return model_args, data_args, training_args


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
    """Load data and model, train with `GCLTrainer`, save; returns the train metrics and the output paths."""
    from gcl_hf.modeling.loading import load_processor

    from gcl_hf.data.collator import GCLCollator
    from gcl_hf.data.pairs import load_image_text_pairs
    from gcl_hf.modeling.model import is_peft_model
    from gcl_hf.training.trainer import GCLTrainer

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
            check_images=False if data_args.check_images == "no" else data_args.check_images,
            errors=data_args.data_errors,
        )
    if data_args.max_train_samples is not None:
        train_dataset = train_dataset.select(range(min(data_args.max_train_samples, len(train_dataset))))
    model = build_model(model_args, training_args)
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
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
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
        print(f"gcl-hf train: done ({outputs['metrics'].get('train_loss', float('nan')):.4f} mean loss); {saved}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
