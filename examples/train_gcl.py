"""Fine-tune a CLIP-like checkpoint with Generalized Contrastive Learning on image–caption pairs.

One process:
    python examples/train_gcl.py --model_name_or_path openai/clip-vit-base-patch32 \
        --train_data /data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json --output_dir out/gcl-clip-b32 \
        --lora_r 16 --per_device_train_batch_size 256 --gradient_cache_chunk_size 64 --bf16 \
        --dataloader_num_workers 8

Two GPUs (negatives gathered across both processes; see examples/accelerate_config.yaml):
    accelerate launch --config_file examples/accelerate_config.yaml examples/train_gcl.py ...same flags...

Every field of ModelArguments / DataArguments (gcl_hf.cli_train) and GCLTrainingArguments is a flag; run with
--help for the list. `gcl-hf train ...` runs the same steps.
"""

from __future__ import annotations

import os
import sys

from transformers import AutoProcessor, HfArgumentParser

from gcl_hf.cli_train import DataArguments, ModelArguments, build_model
from gcl_hf.collator import GCLCollator
from gcl_hf.data import load_image_text_pairs
from gcl_hf.trainer import GCLTrainer
from gcl_hf.training_args import GCLTrainingArguments


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataArguments, GCLTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)

    # 1. image–caption pairs; images stay lazy (paths) and are decoded by the collator in dataloader workers
    with training_args.main_process_first(desc="loading the training pairs"):
        pairs = load_image_text_pairs(
            data_args.train_data,
            image_root=data_args.image_root,
            image_column=training_args.image_column,
            caption_column=training_args.caption_column,
            format=data_args.data_format,
            errors=data_args.data_errors,
        )
    if data_args.max_train_samples is not None:
        pairs = pairs.select(range(min(data_args.max_train_samples, len(pairs))))

    # 2. the backbone wrapped as a GCLModel (fusion / objective from the flags)
    processor = AutoProcessor.from_pretrained(model_args.processor_name_or_path or model_args.model_name_or_path,
                                              revision=model_args.revision)
    model = build_model(model_args, training_args)

    # 3. train: LoRA (--lora_r), gradient cache (--gradient_cache_chunk_size), per-pair losses in the logs
    trainer = GCLTrainer(
        model,
        training_args,
        train_dataset=pairs,
        data_collator=GCLCollator.for_model(model, processor, errors=training_args.image_errors),
        processing_class=processor,
    )
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    # 4. save: the GCL model, the LoRA adapter (with the trained temperature), and a plain merged backbone
    trainer.save_model()
    if training_args.lora_r is not None:
        trainer.save_adapter(os.path.join(training_args.output_dir, "adapter"))
    if model_args.save_backbone and training_args.should_save:
        trainer.model.save_backbone(os.path.join(training_args.output_dir, "backbone"))
        processor.save_pretrained(os.path.join(training_args.output_dir, "backbone"))
    return result.metrics


if __name__ == "__main__":
    main(sys.argv[1:])
