"""VISTA (bge-base-en-v1.5 + EVA02-CLIP-B/16 sizes, random weights from configs): the cost of GCL's fused pass.

With a VISTA backbone every image embedding is itself a text-encoder pass (the image tokens with the empty prompt),
and the fused embedding is one more text-encoder pass over the same image tokens. Timed here, on the same model and
batch, in ABBA rounds (median of per-round ratios of process CPU time):

* ``gcl_over_cl``: a GCL training step (six pairs, forward + loss + backward + AdamW) over a CL step that embeds
  only images and texts (CLIP's two pairs, no fused pass): what GCL costs on VISTA;
* ``gcl_over_cl_same_forward``: the same GCL step over a CL step through the same ``GCLModel.forward`` (which embeds
  fused items too): the loss's own share;
* ``three_getters_over_hook``: image, text and fused features by the three separate getters (two ViT passes) over
  ``get_image_text_fused_features`` (one ViT pass) — the ViT-once property, timed (a test counts the calls);
* ``images_per_s``: the image encoder (ViT + the text-encoder pass) in inference.

    python bench/bench_vista.py            # VISTA-base sizes, batch 4, caption 20 tokens
    python bench/bench_vista.py --quick    # tiny VISTA, a few seconds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import common_args, interleave, machine_info, make_record, paired_ratio, report, resolve_threads, stats, write_record  # noqa: E402

import gcl_hf  # noqa: E402,F401 - registers VISTA
from gcl_hf import GCLModel  # noqa: E402
from gcl_hf.losses.gcl import ALL_PAIRS, CLIP_PAIRS  # noqa: E402
from gcl_hf.modeling.vista import VistaConfig, VistaModel  # noqa: E402

BASE_TEXT = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
             "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512}
TINY_TEXT = {"model_type": "bert", "vocab_size": 512, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 32, "patch_size": 8, "rope_pretrain_grid": 4}
CLS, SEP = 101, 102


def build(quick: bool) -> VistaModel:
    config = VistaConfig(text_config=TINY_TEXT if quick else BASE_TEXT, vision_config=TINY_VISION if quick else {},
                         image_only_input_ids=[CLS, SEP])
    torch.manual_seed(0)
    return VistaModel(config)


def make_batch(config: VistaConfig, batch: int, tokens: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    size = config.vision_config.image_size
    ids = torch.randint(1000 if config.text_config.vocab_size > 1000 else 5, config.text_config.vocab_size - 1,
                        (batch, tokens), generator=g)
    ids[:, 0], ids[:, -1] = CLS, SEP
    return {"pixel_values": torch.randn(batch, 3, size, size, generator=g), "input_ids": ids,
            "attention_mask": torch.ones_like(ids)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=None, help="pairs per step (default 4; quick 8)")
    p.add_argument("--tokens", type=int, default=20, help="caption length in tokens")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3; quick 2)")
    common_args(p)
    args = p.parse_args(argv)
    resolve_threads(args)
    batch_size = args.batch or (8 if args.quick else 4)
    rounds = args.rounds or (2 if args.quick else 3)
    machine = machine_info()
    backbone = build(args.quick)
    model = GCLModel.from_backbone(backbone).train()
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-6)
    batch = make_batch(backbone.config, batch_size, args.tokens)
    gcl_pairs, cl_pairs = [list(x) for x in ALL_PAIRS], [list(x) for x in CLIP_PAIRS]

    def finish(loss: torch.Tensor) -> None:
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def gcl_step() -> None:
        model.config.update_loss_settings(pairs=gcl_pairs, negatives="all")
        finish(model(**batch, return_loss=True).loss)

    def cl_same_forward() -> None:
        model.config.update_loss_settings(pairs=cl_pairs, negatives="modality")
        finish(model(**batch, return_loss=True).loss)

    def cl_step() -> None:  # images and texts only: no fused pass
        model.config.update_loss_settings(pairs=cl_pairs, negatives="modality")
        image = model(pixel_values=batch["pixel_values"]).image_embeds
        text = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).text_embeds
        finish(model.loss_from_embeddings(image, text, None, return_pair_losses=False))

    steps = interleave({"gcl": gcl_step, "cl": cl_step, "cl_same_forward": cl_same_forward}, rounds)

    backbone.eval()
    pv, ids, mask = batch["pixel_values"], batch["input_ids"], batch["attention_mask"]

    def hook() -> None:
        with torch.inference_mode():
            backbone.get_image_text_fused_features(pv, ids, mask)

    def getters() -> None:
        with torch.inference_mode():
            backbone.get_image_features(pv)
            backbone.get_text_features(ids, mask)
            backbone.get_fused_features(pv, ids, mask)

    def images() -> None:
        with torch.inference_mode():
            backbone.get_image_features(pv)

    infer = interleave({"hook": hook, "getters": getters, "images": images}, rounds)
    cpu = {name: steps.cpu[name] for name in steps.cpu} | {name: infer.cpu[name] for name in infer.cpu}
    wall = {name: steps.wall[name] for name in steps.wall} | {name: infer.wall[name] for name in infer.wall}
    ratios = {
        "gcl_over_cl": paired_ratio(cpu["gcl"], cpu["cl"]),
        "gcl_over_cl_same_forward": paired_ratio(cpu["gcl"], cpu["cl_same_forward"]),
        "three_getters_over_hook": paired_ratio(cpu["getters"], cpu["hook"]),
        "gcl_over_cl_wall": paired_ratio(wall["gcl"], wall["cl"]),
    }
    figures = {"cpu_seconds": {k: stats(v) for k, v in cpu.items()}, "wall_seconds": {k: stats(v) for k, v in wall.items()},
               "images_per_s": batch_size / min(wall["images"]),
               "pairs_per_s_gcl_step": batch_size / min(wall["gcl"])}
    vision = backbone.config.vision_config
    config = {"text": backbone.config.text_config.to_diff_dict() if args.quick else BASE_TEXT,
              "vision": {k: getattr(vision, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                         "intermediate_size", "image_size", "patch_size")},
              "image_tokens": backbone.config.num_image_tokens, "batch": batch_size, "caption_tokens": args.tokens,
              "rounds": rounds, "threads": args.threads, "optimizer": "AdamW"}
    targets = {"one_vit_pass_is_cheaper(three_getters_over_hook>1)": ratios["three_getters_over_hook"]["median_of_ratios"] > 1}
    record = make_record("vista", quick=args.quick, config=config, figures=figures, ratios=ratios, targets=targets,
                         machine=machine)
    if not args.no_write:
        write_record(record, args.out)
    report(record, {
        "GCL / CL step (CL without the fused pass)": f"{ratios['gcl_over_cl']['median_of_ratios']:.3f}",
        "GCL / CL step (same forward)": f"{ratios['gcl_over_cl_same_forward']['median_of_ratios']:.3f}",
        "three getters / one-ViT hook": f"{ratios['three_getters_over_hook']['median_of_ratios']:.3f}",
        "image encoder": f"{figures['images_per_s']:.2f} images/s",
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
