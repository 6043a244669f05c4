"""Fine-tune a CLIP-like checkpoint with Generalized Contrastive Learning on image–caption pairs.

One process:
    python examples/train_gcl.py --model_name_or_path openai/clip-vit-base-patch32 \
        --train_data /data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json --output_dir out/gcl-clip-b32 \
        --lora_r 16 --per_device_train_batch_size 256 --gradient_cache_chunk_size 64 --bf16 \
        --dataloader_num_workers 8

Two GPUs (negatives gathered across both processes; see examples/accelerate_config.yaml):
    accelerate launch --config_file examples/accelerate_config.yaml examples/train_gcl.py ...same flags...

Every field of ModelArguments / DataArguments (gcl_hf.cli.train) and GCLTrainingArguments is a flag; run with
--help for the list. `gcl-hf train ...` runs the same steps.
"""

from __future__ import annotations

import sys

from gcl_hf.cli.train import parse_args, run


def main(argv: list[str] | None = None) -> dict:
    """Parse the flags and run the library's training steps (`gcl_hf.cli.train.run`):

    1. image–caption pairs (`gcl_hf.data.load_image_text_pairs`); images stay lazy (paths) and are decoded by
       the collator (`gcl_hf.data.collator.GCLCollator.for_model`) in the dataloader workers;
    2. the backbone wrapped as a `GCLModel` (`gcl_hf.cli.train.build_model`: fusion / objective from the flags);
    3. `GCLTrainer`: LoRA (--lora_r), gradient cache (--gradient_cache_chunk_size), per-pair losses in the logs;
    4. save: the GCL model, with LoRA the adapter directory (`gcl_hf.hub.adapter`), and a plain merged backbone.

    Returns the training metrics.
    """
    model_args, data_args, training_args = parse_args(argv)
    return run(model_args, data_args, training_args)["metrics"]


if __name__ == "__main__":
    main(sys.argv[1:])
