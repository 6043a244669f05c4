"""`gcl-hf convert-vista`: a released VISTA checkpoint (FlagEmbedding's ``.pth``) → a `VistaModel` directory.

    gcl-hf convert-vista --checkpoint Visualized_base_en_v1.5.pth --text-model BAAI/bge-base-en-v1.5 --output vista-base
    gcl-hf convert-vista --checkpoint Visualized_m3.pth --text-model BAAI/bge-m3 --output vista-m3

The ``.pth`` is read with ``torch.load(weights_only=True)``; the directory gets safetensors weights, the config,
the BGE tokenizer and VISTA's image processor, so ``AutoModel`` / ``AutoProcessor`` (after ``import gcl_hf``)
and ``GCLModel.from_backbone(DIR)`` load it. The checkpoint keys VISTA never uses are listed.
"""

from __future__ import annotations

import json

from gcl_hf.cli.common import CLIError, GCLArgumentParser

__all__ = ["build_parser", "main"]


def build_parser() -> GCLArgumentParser:
    p = GCLArgumentParser(prog="gcl-hf convert-vista", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="VISTA .pth (Visualized_base_en_v1.5.pth, Visualized_m3.pth)")
    p.add_argument("--text-model", required=True,
                   help="the BGE model it was built on (config and tokenizer): BAAI/bge-base-en-v1.5 or BAAI/bge-m3, "
                        "or a local copy")
    p.add_argument("--output", required=True, help="directory to write the converted model to")
    p.add_argument("--revision", help="revision of --text-model")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    """``gcl-hf convert-vista``."""
    from pathlib import Path

    args = build_parser().parse_args(argv)
    from gcl_hf.modeling.vista.convert import VistaConversionError, convert_vista

    if not Path(args.checkpoint).is_file():
        raise CLIError(f"--checkpoint {args.checkpoint}: file not found")
    try:
        result = convert_vista(args.checkpoint, args.text_model, args.output, revision=args.revision)
    except VistaConversionError as exc:
        raise CLIError(f"{args.checkpoint}: {exc}") from None
    config = result.config
    summary = {
        "output": str(result.output), "dtype": str(result.dtype).replace("torch.", ""),
        "text_model": config.text_config.model_type, "hidden_size": config.text_config.hidden_size,
        "vision": {k: getattr(config.vision_config, k) for k in ("hidden_size", "num_hidden_layers", "image_size",
                                                                 "patch_size")},
        "image_tokens": config.num_image_tokens, "max_fused_text_length": config.max_fused_text_length,
        "image_only_input_ids": config.image_only_input_ids, "unused_keys": result.unused_keys,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    vision = summary["vision"]
    print(f"wrote {summary['output']} ({summary['dtype']}): {summary['text_model']} text encoder "
          f"({summary['hidden_size']} wide), EVA02 {vision['num_hidden_layers']} blocks x {vision['hidden_size']}, "
          f"{vision['image_size']} px / {vision['patch_size']} px patches = {summary['image_tokens']} image tokens; "
          f"fused texts up to {summary['max_fused_text_length']} tokens")
    print(f"unused checkpoint keys ({len(result.unused_keys)}): {', '.join(result.unused_keys)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
