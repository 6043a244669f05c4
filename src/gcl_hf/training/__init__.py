"""Training: `GCLTrainingArguments` + `GCLTrainer` (a transformers `Trainer`) and the gradient cache."""

from gcl_hf.training.arguments import GCLTrainingArguments
from gcl_hf.training.grad_cache import cached_gradient_step
from gcl_hf.training.guard import NonFiniteGradientError, NonFiniteLossError, NonFiniteTrainingError
from gcl_hf.training.trainer import GCLTrainer

__all__ = ["GCLTrainer", "GCLTrainingArguments", "NonFiniteGradientError", "NonFiniteLossError",
           "NonFiniteTrainingError", "cached_gradient_step"]
