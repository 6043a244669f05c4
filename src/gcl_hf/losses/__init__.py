"""The GCL loss as plain tensor functions: the pair vocabulary, `gcl_loss`, and gathering with gradient."""

from gcl_hf.losses.gcl import gcl_loss, gcl_loss_from_settings
from gcl_hf.losses.settings import (ALL_PAIRS, CLIP_PAIRS, MODALITY_NAMES, NEGATIVES, OBJECTIVES, LossSettings, pair_name,
                                    parse_pair_weights, parse_pairs)

__all__ = ["ALL_PAIRS", "CLIP_PAIRS", "LossSettings", "MODALITY_NAMES", "NEGATIVES", "OBJECTIVES", "gcl_loss",
           "gcl_loss_from_settings", "pair_name", "parse_pair_weights", "parse_pairs"]
