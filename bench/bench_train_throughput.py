"""Training throughput: `GCLTrainer` with the speed options vs a naive eager loop (target: ≥ 2× on a GPU).

- ``naive``: a hand-written loop over a plain ``CLIPModel``: captions padded to a fixed 77 tokens, bf16 autocast,
  ``torch.optim.AdamW`` with torch's defaults (the foreach implementation on CUDA), a hand-written six-pair GCL
  loss (six separate similarity matrices), eager mode.
- ``gcl_trainer``: `GCLTrainer` on the same initial weights and data with dynamic padding (each batch padded to
  its longest caption; captions average about 20 tokens), ``torch_compile=True``, ``optim="adamw_torch_fused"``
  and ``bf16=True``.

Both read their images from one device-resident bank of ready pixel tensors (the collator gathers rows by
index), so the comparison measures the training step, not image decoding or host-to-device copies (pool
decoding is `bench_encoding.py`'s subject). Steps are timed from one step's end to the next (everything the
loop does), after warm-up steps that absorb compilation; samples/s = batch / median step time.

    python bench/bench_train_throughput.py           # CUDA: ViT-B/32-size CLIPModel (from config), batch 1024
    python bench/bench_train_throughput.py --quick   # tiny CLIP, batch 16 (runs on CPU; compile: aot_eager)

Without a GPU the full size is refused (hours on a CPU); ``--quick`` checks that both paths run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ModelSpec,
    common_args,
    machine_info,
    make_record,
    report,
    resolve_threads,
    stats,
    write_record,
)

TARGET = 2.0
FIXED_LENGTH = 77
SIX = [("image", "text"), ("text", "image"), ("image", "fused"), ("fused", "image"), ("text", "fused"),
       ("fused", "text")]


class Captions(torch.utils.data.Dataset):
    """Records ``{"pixel_index", "input_ids"}``: token lists BOS … EOS of varied length (mean ``mean_tokens``)."""

    def __init__(self, n: int, bank_size: int, text_config, mean_tokens: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        low = max(3, mean_tokens // 2)
        high = min(text_config.max_position_embeddings, 2 * mean_tokens - low)
        lengths = torch.randint(low, high + 1, (n,), generator=g).tolist()
        specials = (text_config.bos_token_id, text_config.eos_token_id, text_config.pad_token_id)
        top = min([text_config.vocab_size] + [s for s in specials if s >= 3])  # ordinary tokens: [3, top)
        self.records = []
        for i, length in enumerate(lengths):
            body = torch.randint(3, top, (length - 2,), generator=g).tolist()
            self.records.append({"pixel_index": i % bank_size,
                                 "input_ids": [text_config.bos_token_id] + body + [text_config.eos_token_id]})

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.records[i]


class BankCollator:
    """Gathers ready pixels from a device-resident bank; pads captions to the batch's longest (as `GCLCollator`
    does with ``padding="longest"``) or to ``fixed_length``."""

    def __init__(self, bank: torch.Tensor, pad_id: int, fixed_length: int | None = None):
        self.bank, self.pad_id, self.fixed_length = bank, pad_id, fixed_length

    def __call__(self, records: list[dict]) -> dict[str, torch.Tensor]:
        width = self.fixed_length or max(len(r["input_ids"]) for r in records)
        ids = torch.full((len(records), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(records), width), dtype=torch.long)
        for i, r in enumerate(records):
            ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, :len(r["input_ids"])] = 1
        index = torch.tensor([r["pixel_index"] for r in records], device=self.bank.device)
        device = self.bank.device
        return {"pixel_values": self.bank[index], "input_ids": ids.to(device), "attention_mask": mask.to(device)}


def six_pair_loss(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The GCL loss written the obvious way: fused = normalize(image + text), six similarity matrices."""
    emb = {"image": F.normalize(image_features.float(), dim=-1), "text": F.normalize(text_features.float(), dim=-1),
           "fused": F.normalize((image_features + text_features).float(), dim=-1)}
    labels = torch.arange(image_features.shape[0], device=image_features.device)
    return sum(F.cross_entropy(scale * emb[a] @ emb[b].T, labels) for a, b in SIX) / len(SIX)


def _features(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def run_naive(config, bank, data, batch: int, steps: int, warmup: int, device) -> list[float]:
    from transformers import CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True,
                                         collate_fn=BankCollator(bank, config.text_config.pad_token_id, FIXED_LENGTH))
    ends = []
    it = iter(loader)
    for _ in range(warmup + steps):
        inputs = next(it)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            image = _features(model.get_image_features(pixel_values=inputs["pixel_values"]))
            text = _features(model.get_text_features(input_ids=inputs["input_ids"],
                                                     attention_mask=inputs["attention_mask"]))
            loss = six_pair_loss(image, text, model.logit_scale.exp())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
    return [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:])]


def run_trainer(config, bank, data, batch: int, steps: int, warmup: int, device, compile_backend: str | None,
                out_dir: str, workers: int = 0) -> tuple[list[float], dict]:
    """`GCLTrainer` with the speed options; step times after ``warmup`` steps. With ``workers`` > 0 the
    dataloader workers pad the captions and collate row numbers (they must not touch the device); the trainer
    gathers those rows of the device-resident ``bank`` before the loss."""
    from transformers import CLIPModel, TrainerCallback

    from gcl_hf import GCLModel
    from gcl_hf.training.trainer import GCLTrainer
    from gcl_hf.training.arguments import GCLTrainingArguments

    class BankTrainer(GCLTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if workers:  # "pixel_values" holds row numbers of the bank
                inputs = {**inputs, "pixel_values": bank[inputs["pixel_values"]]}
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    torch.manual_seed(0)
    model = GCLModel.from_backbone(CLIPModel(config))
    speed = {"bf16": True, "optim": "adamw_torch_fused", "torch_compile": compile_backend is not None}
    if compile_backend is not None:
        speed["torch_compile_backend"] = compile_backend
    args = GCLTrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=batch, max_steps=warmup + steps, learning_rate=1e-5,
        lr_scheduler_type="constant", logging_steps=10_000, save_strategy="no", report_to=[],
        use_cpu=device.type == "cpu", dataloader_num_workers=workers,
        dataloader_pin_memory=bool(workers) and device.type == "cuda", seed=0,
        disable_tqdm=True, dataloader_drop_last=True, **speed)
    clock = StepClock()
    rows = torch.arange(bank.shape[0]) if workers else bank  # workers collate row numbers (CPU), not pixels
    trainer = BankTrainer(model, args, train_dataset=data, data_collator=BankCollator(rows, config.text_config.pad_token_id),
                          callbacks=[clock])
    trainer.train()
    ends = clock.ends
    speed["dataloader_num_workers"] = workers
    return [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:])], speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser)
    parser.add_argument("--batch", type=int, default=None, help="default 1024 (quick 16)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20; quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5; quick 2)")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend for GCLTrainer (default inductor; quick on CPU: aot_eager); "
                             "'none' turns compilation off")
    parser.add_argument("--device", default=None, help="default cuda when available, else cpu")
    args = parser.parse_args()
    resolve_threads(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and not args.quick:
        raise SystemExit("bench_train_throughput: the full size (ViT-B/32, batch 1024) needs a GPU; "
                         "on a CPU run it with --quick")
    batch = args.batch or (16 if args.quick else 1024)
    steps = args.steps or (3 if args.quick else 20)
    warmup = max(1, args.warmup or (2 if args.quick else 5))
    backend = args.compile_backend or ("aot_eager" if (args.quick and device.type == "cpu") else "inductor")
    backend = None if backend == "none" else backend
    mean_tokens = 12 if args.quick else 20
    machine = machine_info()

    import transformers
    from transformers import CLIPConfig

    transformers.logging.set_verbosity_error()
    spec = ModelSpec.tiny()
    if args.quick:
        config = spec.clip_config()
        config.text_config.max_position_embeddings = FIXED_LENGTH  # the naive loop pads to 77
    else:
        config = CLIPConfig()  # ViT-B/32 sizes: vision 768 x 12 layers, patch 32, 224 px; text 512 x 12; dim 512
    side = config.vision_config.image_size
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(batch, 3, side, side, generator=g).to(device)
    n = batch * (warmup + steps + 1)
    data = Captions(n, batch, config.text_config, mean_tokens)

    print(f"training throughput on {device}: batch {batch}, {warmup} warm-up + {steps} timed steps", flush=True)
    naive = run_naive(config, bank, data, batch, steps, warmup, device)
    print(f"  naive: median step {statistics.median(naive):.3f}s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ours, speed = run_trainer(config, bank, data, batch, steps, warmup, device, backend, tmp)
    print(f"  GCLTrainer: median step {statistics.median(ours):.3f}s", flush=True)
    # a second naive run after the trainer: the two contenders alternate (A B A) against load drift
    naive += run_naive(config, bank, data, batch, steps, warmup, device)

    sps_naive = batch / statistics.median(naive)
    sps_ours = batch / statistics.median(ours)
    ratio = sps_ours / sps_naive
    on_gpu = device.type == "cuda"
    record = make_record(
        "train_throughput",
        quick=args.quick,
        machine=machine,
        config={"device": str(device), "model": "CLIPConfig() (ViT-B/32 sizes)" if not args.quick else spec.to_dict(),
                "batch": batch, "steps": steps, "warmup": warmup, "caption_tokens_mean": mean_tokens,
                "naive": "eager CLIPModel, fixed 77-token padding, bf16 autocast, torch.optim.AdamW defaults, "
                         "hand-written six-pair loss",
                "gcl_trainer": {**speed, "padding": "longest in batch"},
                "images": "device-resident bank of ready pixel tensors (both contenders)"},
        figures={"seconds_per_step": {"naive": stats(naive), "gcl_trainer": stats(ours)},
                 "samples_per_s": {"naive": sps_naive, "gcl_trainer": sps_ours}},
        ratios={"trainer_over_naive": ratio},
        targets={f"trainer_over_naive>={TARGET}": ratio >= TARGET} if on_gpu else {},
        notes=None if on_gpu else "CPU run: checks that both paths run; the target applies on a GPU",
    )
    report(record, {"samples/s": f"naive {sps_naive:.1f}, GCLTrainer {sps_ours:.1f} -> x{ratio:.2f}"})
    if not args.no_write:
        write_record(record, args.out)


if __name__ == "__main__":
    main()
