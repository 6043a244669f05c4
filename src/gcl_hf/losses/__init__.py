"""The GCL loss as plain tensor functions: the pair vocabulary, `gcl_loss`, and gathering with gradient."""

from gcl_hf.losses.gcl import ALL_PAIRS, CLIP_PAIRS, MODALITY_NAMES, NEGATIVES, OBJECTIVES, gcl_loss, pair_name, parse_pairs

__all__ = ["ALL_PAIRS", "CLIP_PAIRS", "MODALITY_NAMES", "NEGATIVES", "OBJECTIVES", "gcl_loss", "pair_name", "parse_pairs"]
