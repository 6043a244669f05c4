"""Training: `GCLTrainingArguments` + `GCLTrainer` (a transformers `Trainer`) and the gradient cache."""

from gcl_hf.training.arguments import GCLTrainingArguments
from gcl_hf.training.grad_cache import cached_gradient_step
from gcl_hf.training.trainer import GCLTrainer, NonFiniteLossError

__all__ = ["GCLTrainer", "GCLTrainingArguments", "NonFiniteLossError", "cached_gradient_step"]
