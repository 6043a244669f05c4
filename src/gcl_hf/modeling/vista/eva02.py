"""The EVA02 vision tower of VISTA, written natively: patch embedding + CLS + absolute positions, then pre-norm
blocks with 2-D rotary embeddings on the patch tokens (not the CLS), sub-LayerNorms and a SwiGLU MLP.

q/k/v are separate ``nn.Linear`` modules (q and v with a bias, k without), so peft's LoRA reaches them by name
(``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``). Attention runs through ``scaled_dot_product_attention``
(``sdpa``) or the plain softmax (``eager``). Patch dropout, when configured, acts in train mode only and keeps
each kept patch's own rotary position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput

from gcl_hf.modeling.vista.configuration_vista import Eva02VisionConfig

__all__ = ["Eva02Attention", "Eva02Layer", "Eva02MLP", "Eva02RotaryEmbedding", "Eva02VisionModel",
           "rotary_tables"]


def rotary_tables(config: Eva02VisionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` ``[grid*grid, head_dim]`` of the 2-D rotary embedding: the first half of a head rotates
    with the patch's row, the second half with its column, each pair of channels at one frequency; positions are
    rescaled from the patch grid to ``rope_pretrain_grid``."""
    head_dim = config.hidden_size // config.num_attention_heads
    half = head_dim // 2
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    grid = config.image_size // config.patch_size
    positions = torch.arange(grid) / grid * config.rope_pretrain_grid
    angles = (positions[:, None] * inv_freq[None, :]).repeat_interleave(2, dim=-1)  # [grid, half]
    rows = angles[:, None, :].expand(grid, grid, half)
    cols = angles[None, :, :].expand(grid, grid, half)
    table = torch.cat([rows, cols], dim=-1).reshape(grid * grid, head_dim)
    return table.cos(), table.sin()


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class Eva02RotaryEmbedding(nn.Module):
    """Applies the rotary tables to the patch positions of q or k (``[B, heads, 1 + n, head_dim]``)."""

    def __init__(self, config: Eva02VisionConfig) -> None:
        super().__init__()
        self.config = config
        cos, sin = rotary_tables(config)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def tables(self, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The tables for all patches, or ``[B, 1, n_kept, head_dim]`` for the kept patch indices ``keep``."""
        if keep is None:
            return self.cos, self.sin
        return self.cos[keep][:, None], self.sin[keep][:, None]

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        patches = x[:, :, 1:]
        rotated = patches * cos + _rotate_pairs(patches) * sin
        return torch.cat((x[:, :, :1], rotated.to(x.dtype)), dim=2)


class Eva02Attention(nn.Module):
    def __init__(self, config: Eva02VisionConfig) -> None:
        super().__init__()
        self.config = config
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = width // self.num_heads
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(width, width, bias=True)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=True)
        self.inner_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.out_proj = nn.Linear(width, width)

    def forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden_states.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        q = Eva02RotaryEmbedding.apply(heads(self.q_proj(hidden_states)), cos, sin)
        k = Eva02RotaryEmbedding.apply(heads(self.k_proj(hidden_states)), cos, sin)
        v = heads(self.v_proj(hidden_states))
        dropout = self.config.attention_dropout if self.training else 0.0
        if self.config._attn_implementation == "eager":
            weights = (q * self.scale) @ k.transpose(-2, -1)
            weights = F.dropout(weights.softmax(dim=-1), p=dropout, training=self.training)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, length, width)
        return self.out_proj(self.inner_norm(out))


class Eva02MLP(nn.Module):
    """SwiGLU with a LayerNorm before the down projection."""

    def __init__(self, config: Eva02VisionConfig) -> None:
        super().__init__()
        width, hidden = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(width, hidden)
        self.up_proj = nn.Linear(width, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.down_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.ffn_norm(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class Eva02Layer(GradientCheckpointingLayer):
    def __init__(self, config: Eva02VisionConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = Eva02Attention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = Eva02MLP(config)

    def forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(self.layer_norm1(hidden_states), cos, sin)
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class Eva02VisionModel(nn.Module):
    """EVA02 ViT → ``last_hidden_state`` ``[B, 1 + patches, width]`` of the last block (CLS first; no final
    norm, no head: VISTA uses the patch tokens as they leave the last block)."""

    def __init__(self, config: Eva02VisionConfig) -> None:
        super().__init__()
        self.config = config
        width = config.hidden_size
        self.patch_embedding = nn.Conv2d(config.num_channels, width, kernel_size=config.patch_size,
                                         stride=config.patch_size)
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, width))
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_patches + 1, width))
        self.rotary = Eva02RotaryEmbedding(config)
        self.layers = nn.ModuleList(Eva02Layer(config) for _ in range(config.num_hidden_layers))

    def _drop_patches(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        rate = self.config.patch_dropout
        if not self.training or rate <= 0.0:
            return patches, None
        batch, count, _ = patches.shape
        kept = max(1, int(count * (1.0 - rate)))
        keep = torch.rand(batch, count, device=patches.device).topk(kept, dim=-1).indices.sort(dim=-1).values
        return patches.gather(1, keep[..., None].expand(-1, -1, patches.shape[-1])), keep

    def forward(self, pixel_values: torch.Tensor) -> BaseModelOutput:
        size = self.config.image_size
        if tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(f"Eva02VisionModel: pixel_values are {tuple(pixel_values.shape[-2:])}, the tower "
                             f"takes {size}x{size} images (its image processor's crop size)")
        dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values.to(dtype)).flatten(2).transpose(1, 2)
        patches = patches + self.position_embedding[:, 1:]
        patches, keep = self._drop_patches(patches)
        cls = (self.class_embedding + self.position_embedding[:, :1]).expand(patches.shape[0], -1, -1)
        hidden_states = torch.cat([cls, patches], dim=1)
        cos, sin = self.rotary.tables(keep)
        for layer in self.layers:
            hidden_states = layer(hidden_states, cos, sin)
        return BaseModelOutput(last_hidden_state=hidden_states)
