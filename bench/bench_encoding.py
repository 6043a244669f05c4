"""Pool encoding through the real loading path vs the model's forward on ready tensors (target: ≥ 0.9).

A pool of image, text and fused (image + text) items, a third each, with PNG and JPEG files on disk
(``--source-px`` square, twice the model's input side as real pools are about twice CLIP's 224 px) is encoded
two ways, alternating (ABBA) for ``--rounds``. On a CPU the loading workers and the forward share the same
cores, so the ratio depends on how much work the forward is per item: the default model has CLIP ViT-B/32's
sizes (random weights), the smallest CLIP commonly used for retrieval.

- ``encode_dataset``: `gcl_hf.retrieval.encoding.encode_dataset` with ``num_workers`` DataLoader workers that read and
  decode the files, run the CLIP processor (resize, crop, normalise, tokenise) and collate;
- ``ready_tensors``: the same batches, made by the same processor once before timing, fed to the same
  ``encode_image`` / ``encode_text`` / ``encode_fused`` calls in inference mode (nothing but the forward).

The ratio is throughput(encode_dataset) / throughput(ready_tensors) = time(ready) / time(encode_dataset): 1.0
means loading is entirely hidden behind the forward. Each worker count in ``--workers`` is a contender.

    python bench/bench_encoding.py                 # CLIP ViT-B/32 sizes, 224 px from 448 px files, 192 items
    python bench/bench_encoding.py --model small   # the training benches' 64 px model, 1,536 items
    python bench/bench_encoding.py --quick         # tiny model (32 px), 96 items
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ModelSpec,
    common_args,
    interleave,
    machine_info,
    make_record,
    paired_ratio,
    report,
    resolve_threads,
    stats,
    write_record,
)

from gcl_hf.testing import tiny_processor

TARGET = 0.9
COLOURS = ["red", "green", "blue", "yellow", "white", "black", "purple", "orange"]
SHAPES = ["square", "circle", "triangle", "star", "ring", "cross"]


def synthetic_image(rng: np.random.Generator, side: int) -> np.ndarray:
    """A ``side``² RGB uint8 image: a smooth colour field with blocks and mild noise (compressible like a
    photograph)."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    base = rng.uniform(0, 255, (3, 1, 1)) * (0.5 + 0.5 * np.stack([xx, yy, 1 - xx]))
    img = np.transpose(base, (1, 2, 0)) + rng.normal(0, 8, (side, side, 3))
    for _ in range(3):
        x, y, _s = rng.integers(0, side - side // 4, 3)
        img[y:y + side // 4, x:x + side // 4] = rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def caption(i: int) -> str:
    return f"a {COLOURS[i % 8]} {SHAPES[(i // 8) % 6]} no. {i}"


def write_pool(root: Path, n: int, side: int, seed: int = 0):
    """``n`` items (image / text / fused in turn) with :func:`synthetic_image` files, alternately PNG and JPEG."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = {"id": [], "text": [], "image": [], "modality": []}
    for i in range(n):
        modality = ("image", "text", "image,text")[i % 3]
        path = None
        if "image" in modality:
            path = f"img_{i:05d}.{'png' if i % 2 else 'jpg'}"
            Image.fromarray(synthetic_image(rng, side)).save(root / path, quality=90)
        rows["id"].append(f"c:{i}")
        rows["text"].append(caption(i) if "text" in modality else None)
        rows["image"].append(path)
        rows["modality"].append(modality)
    return datasets.Dataset.from_dict(rows)


def ready_batches(dataset, processor, root: Path, batch_size: int) -> list[tuple[str, np.ndarray, dict]]:
    """The batches `encode_dataset` makes (grouped by modality, in order), preprocessed once."""
    from PIL import Image

    from gcl_hf.modeling.engine import plan_batches
    from gcl_hf.retrieval.encoding import dataset_modalities

    out = []
    for modality, rows in plan_batches(dataset_modalities(dataset), batch_size):
        records = dataset[rows.tolist()]
        kwargs = {"return_tensors": "pt"}
        if modality != "image":
            kwargs.update(text=records["text"], padding=True, truncation=True)
        if modality != "text":
            kwargs["images"] = [Image.open(root / p).convert("RGB") for p in records["image"]]
        out.append((modality, rows, dict(processor(**kwargs))))
    return out


@torch.inference_mode()
def forward_only(model, batches, n: int, dim: int) -> torch.Tensor:
    out = torch.empty(n, dim)
    for modality, rows, inputs in batches:
        if modality == "image":
            emb = model.encode_image(inputs["pixel_values"])
        elif modality == "text":
            emb = model.encode_text(inputs["input_ids"], inputs["attention_mask"])
        else:
            emb = model.encode_fused(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
        out[torch.as_tensor(rows)] = emb
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser)
    parser.add_argument("--model", choices=("vit-b32", "small"), default="vit-b32",
                        help="vit-b32: CLIP ViT-B/32 sizes at 224 px (default); small: the 256-wide, 4-layer, 64 px "
                             "model of the training benches (loading then weighs more against its cheap forward)")
    parser.add_argument("--items", type=int, default=None, help="pool size (default 192 for vit-b32, 1536 for "
                        "small; quick 96)")
    parser.add_argument("--batch", type=int, default=None, help="encoding batch (default 64; quick 32)")
    parser.add_argument("--workers", default=None,
                        help="DataLoader worker counts to try, comma-separated (default 1,2; quick 2)")
    parser.add_argument("--source-px", type=int, default=None, help="image files' side (default 2x model input)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 4; quick 2)")
    args = parser.parse_args()
    resolve_threads(args)
    from gcl_hf.retrieval.encoding import encode_dataset  # imports datasets

    processor_probe = tiny_processor()
    tok = processor_probe.tokenizer
    ids = (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)  # the model pools at the tokenizer's EOS
    if args.quick:
        spec = ModelSpec.tiny()
    else:
        spec = ModelSpec.vit_b32() if args.model == "vit-b32" else ModelSpec()
    spec = dataclasses.replace(spec, token_ids=ids)
    n = args.items or (96 if args.quick else 192 if args.model == "vit-b32" else 1536)
    batch_size = args.batch or (32 if args.quick else 64)
    rounds = args.rounds or (1 if args.quick else 4)
    side = args.source_px or 2 * spec.image_size
    workers = [int(w) for w in (args.workers or ("2" if args.quick else "1,2")).split(",") if w.strip()]
    machine = machine_info()

    model = spec.gcl_model(seed=0).eval()
    processor = tiny_processor(image_size=spec.image_size, max_length=spec.max_length)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pool = write_pool(root, n, side)
        batches = ready_batches(pool, processor, root, batch_size)
        reference = forward_only(model, batches, n, spec.projection_dim)
        check = encode_dataset(model, processor, pool, image_root=str(root), batch_size=batch_size,
                               num_workers=workers[0], show_progress=False)
        max_diff = (check - reference).abs().max().item()

        contenders = {"ready_tensors": lambda: forward_only(model, batches, n, spec.projection_dim)}
        for w in workers:
            contenders[f"encode_dataset_w{w}"] = (
                lambda w=w: encode_dataset(model, processor, pool, image_root=str(root), batch_size=batch_size,
                                           num_workers=w, show_progress=False))
        print(f"pool encoding: {n} items ({side}px PNG/JPEG files), batch {batch_size}, {rounds} rounds", flush=True)
        timings = interleave(contenders, rounds, warmup=1)

    times = timings.wall
    ratios = {name: paired_ratio(times["ready_tensors"], times[name]) for name in contenders if name != "ready_tensors"}
    best = max(ratios, key=lambda k: ratios[k]["median_of_ratios"])
    headline = ratios[best]["median_of_ratios"]
    record = make_record(
        "encoding",
        quick=args.quick,
        machine=machine,
        config={"model_name": "tiny" if args.quick else args.model, "model": spec.to_dict(), "items": n, "modalities": "image / text / image,text in thirds",
                "source_px": side, "formats": "PNG and JPEG alternately", "batch": batch_size, "workers": workers,
                "rounds": rounds, "processor": "CLIPProcessor (PIL image processor, byte-level tokenizer)"},
        figures={"seconds": {k: stats(v) for k, v in times.items()},
                 "items_per_s": {k: n / statistics.median(v) for k, v in times.items()},
                 "max_abs_diff_vs_ready_tensors": max_diff},
        ratios={"loading_over_ready": headline, "best_workers": best,
                **{f"{k}_over_ready": v["median_of_ratios"] for k, v in ratios.items()}, "detail": ratios},
        targets={f"loading_over_ready>={TARGET}": headline >= TARGET, "same_embeddings(<=1e-5)": max_diff <= 1e-5},
    )
    report(record, {
        **{f"throughput {k} / ready tensors": f"{v['median_of_ratios']:.3f} (ratio of medians "
           f"{v['ratio_of_medians']:.3f})" for k, v in ratios.items()},
        "items/s": ", ".join(f"{k} {n / statistics.median(v):.0f}" for k, v in times.items()),
        "embeddings vs ready tensors": f"max |diff| {max_diff:.3g}",
    })
    if not args.no_write:
        write_record(record, args.out)


if __name__ == "__main__":
    main()
