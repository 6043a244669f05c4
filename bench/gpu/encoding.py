"""Pool encoding figures: images/s and texts/s from ready device tensors, and with real decoding (JPEG/PNG
bytes decoded by `gcl_hf.data.images.open_image` and preprocessed by the CLIP processor, captions tokenized,
all in DataLoader workers, then copied to the device and encoded). No ``datasets``: the pool is in memory."""

from __future__ import annotations

import io
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from common import stats
from gpu.models import Case, cases, make_batch
from gpu.runner import Context, figure

#: hand-written H100 reference at ViT-B/32 (items/s from ready tensors)
REFERENCE = {"vit-b32": {"images": 23_000, "texts": 31_000}}


def ready(ctx: Context, case: Case) -> Iterator[dict[str, Any]]:
    """`encode_image` / `encode_text` on a ready device batch, bf16 autocast, inference mode."""
    model = case.gcl_model(ctx.device).eval()
    n = ctx.size(1024, 16)
    batch = make_batch(case, n, ctx.device)
    warmup, steps = ctx.size(3, 1), ctx.size(10, 2)
    calls = {"images": lambda: model.encode_image(batch["pixel_values"]),
             "texts": lambda: model.encode_text(batch["input_ids"], batch["attention_mask"])}
    for kind, call in calls.items():
        with torch.inference_mode(), ctx.autocast():
            times = ctx.times(call, warmup, steps)
        rate = n / statistics.median(times)
        ref = REFERENCE.get(case.name, {}).get(kind)
        yield figure(f"encode_ready_{kind}/{case.name}", rate, f"{kind}/s", ratio=rate / ref if ref else None,
                     reference=f"{ref} {kind}/s (hand-written H100 reference)" if ref else None, model=case.label,
                     config={"batch": n, "text_tokens_padded": int(batch["input_ids"].shape[1]),
                             "image_size": case.image_size, "precision": "bf16 autocast, inference mode"},
                     details={"seconds_per_batch": stats(times)})


class Pool(torch.utils.data.Dataset):
    """``n`` items cycling over ``items`` (encoded image bytes or caption strings)."""

    def __init__(self, items: list[Any], n: int) -> None:
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return self.items[i % len(self.items)]


class DecodeImages:
    """Collate encoded images: decode each (``open_image``: EXIF orientation, RGB) and run the image processor."""

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor

    def __call__(self, items: list[bytes]) -> torch.Tensor:
        from gcl_hf.data.images import open_image

        images = [open_image(b) for b in items]
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]


class Tokenize:
    """Collate captions: tokenize, pad to the batch's longest, truncate to ``max_length``."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        out = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}


def encoded_images(count: int, side: int, seed: int = 0) -> list[bytes]:
    """``count`` synthetic photographs (`bench_encoding.synthetic_image`), alternately JPEG (quality 90) and PNG."""
    from PIL import Image

    from bench_encoding import synthetic_image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        buf = io.BytesIO()
        Image.fromarray(synthetic_image(rng, side)).save(buf, format="PNG" if i % 2 else "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _stream(ctx: Context, loader: Any, encode: Any, skip: int) -> tuple[float, int]:
    """Encode every batch of ``loader``; items/s after the first ``skip`` batches (workers' start-up)."""
    count, start = 0, None
    with torch.inference_mode(), ctx.autocast():
        for i, inputs in enumerate(loader):
            if i == skip:
                if ctx.on_gpu:
                    torch.cuda.synchronize()
                start = time.perf_counter()
            if isinstance(inputs, dict):
                inputs = {k: v.to(ctx.device, non_blocking=True) for k, v in inputs.items()}
                size = inputs["input_ids"].shape[0]
            else:
                inputs = inputs.to(ctx.device, non_blocking=True)
                size = inputs.shape[0]
            encode(inputs)
            if start is not None:
                count += size
    if ctx.on_gpu:
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start), count


def decoded(ctx: Context) -> Iterator[dict[str, Any]]:
    """ViT-B/32 pool encoding with real decoding, images then texts; ratio to the ready-tensor rate of the
    same batches (timed here, on the same model)."""
    from bench_encoding import caption

    from gcl_hf.testing import tiny_processor

    probe = tiny_processor(image_size=32, max_length=8).tokenizer
    ids = (probe.bos_token_id, probe.eos_token_id, probe.pad_token_id)  # the text tower pools at its EOS
    case = cases(ctx.dry_run, token_ids=ids)["vit-b32"]
    processor = tiny_processor(image_size=case.image_size, max_length=case.max_length)
    model = case.gcl_model(ctx.device).eval()
    workers = ctx.size(max(1, min(12, (os.cpu_count() or 2) - 2)), 2)
    batch_size, n, skip = ctx.size(256, 8), ctx.size(8192, 48), ctx.size(4, 1)
    side = 2 * case.image_size  # real pools are about twice CLIP's input side
    pools = {"images": (Pool(encoded_images(ctx.size(256, 8), side), n), DecodeImages(processor.image_processor),
                        lambda x: model.encode_image(x)),
             "texts": (Pool([caption(i) for i in range(1000)], n), Tokenize(processor.tokenizer, case.max_length),
                       lambda x: model.encode_text(x["input_ids"], x["attention_mask"]))}
    for kind, (pool, collate, encode) in pools.items():
        loader = torch.utils.data.DataLoader(pool, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                                             pin_memory=ctx.on_gpu, prefetch_factor=4)
        rate, count = _stream(ctx, loader, encode, skip)
        sample = collate([pool[i] for i in range(batch_size)])
        sample = ({k: v.to(ctx.device) for k, v in sample.items()} if isinstance(sample, dict)
                  else sample.to(ctx.device))
        with torch.inference_mode(), ctx.autocast():
            times = ctx.times(lambda: encode(sample), ctx.size(2, 1), ctx.size(8, 2))
        ready_rate = batch_size / statistics.median(times)
        yield figure(f"encode_decode_{kind}/{case.name}", rate, f"{kind}/s", ratio=rate / ready_rate,
                     model=case.label,
                     config={"batch": batch_size, "items_timed": count, "dataloader_workers": workers,
                             "decoding": "JPEG/PNG bytes (448 px, alternately) -> open_image -> CLIPImageProcessor "
                             "(resize, crop, normalise)" if kind == "images" else
                             "byte-level tokenizer, padded to the batch's longest",
                             "ratio": "decoded rate / ready-tensor rate of the same batch size"},
                     details={"ready_rate": ready_rate, "ready_seconds_per_batch": stats(times)})
