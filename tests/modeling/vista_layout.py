"""A tiny state dict in the layout of FlagEmbedding's VISTA ``.pth`` (key names, shapes, RoPE copies), written
from the layout alone, and a local text-model directory (config + tokenizer) to convert it with."""

from __future__ import annotations

import torch
from transformers import BertConfig

from gcl_hf.modeling.vista.testing import wordpiece_tokenizer

TEXT, WIDTH, LAYERS, HEADS, PATCH, IMAGE = 32, 32, 2, 2, 8, 32


def rope_tables(grid: int, head_dim: int, pretrain: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """EVA02-CLIP's 2-D RoPE tables, written out from its definition (rows then columns, pairs interleaved)."""
    dim = head_dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    t = torch.arange(grid) / grid * pretrain
    f = torch.einsum("i,j->ij", t, freqs).repeat_interleave(2, dim=-1)
    table = torch.empty(grid, grid, 2 * dim)
    for i in range(grid):
        for j in range(grid):
            table[i, j] = torch.cat([f[i], f[j]])
    table = table.reshape(grid * grid, 2 * dim)
    return table.cos(), table.sin()


def reference_state_dict(seed: int = 0, vocab: int | None = None, layers: int = LAYERS,
                         dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    vocab = vocab or len(wordpiece_tokenizer())
    sd: dict[str, torch.Tensor] = {}

    def put(key: str, *shape: int, scale: float = 0.2) -> None:
        sd[key] = (torch.randn(*shape, generator=g) * scale).to(dtype)

    def norm(key: str, n: int) -> None:
        sd[key + ".weight"] = (1 + 0.1 * torch.randn(n, generator=g)).to(dtype)
        put(key + ".bias", n, scale=0.1)

    put("bge_embeddings.word_embeddings.weight", vocab, TEXT)
    put("bge_embeddings.position_embeddings.weight", 64, TEXT)
    put("bge_embeddings.token_type_embeddings.weight", 2, TEXT)
    norm("bge_embeddings.LayerNorm", TEXT)
    for i in range(layers):
        p = f"bge_encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            put(p + name + ".weight", TEXT, TEXT)
            put(p + name + ".bias", TEXT)
        norm(p + "attention.output.LayerNorm", TEXT)
        put(p + "intermediate.dense.weight", 2 * TEXT, TEXT)
        put(p + "intermediate.dense.bias", 2 * TEXT)
        put(p + "output.dense.weight", TEXT, 2 * TEXT)
        put(p + "output.dense.bias", TEXT)
        norm(p + "output.LayerNorm", TEXT)
    put("bge_pooler.dense.weight", TEXT, TEXT)
    put("bge_pooler.dense.bias", TEXT)
    sd["model_visual.logit_scale"] = torch.tensor(2.6592).to(dtype)
    v = "model_visual.visual."
    grid = IMAGE // PATCH
    put(v + "cls_token", 1, 1, WIDTH)
    put(v + "pos_embed", 1, grid * grid + 1, WIDTH)
    put(v + "patch_embed.proj.weight", WIDTH, 3, PATCH, PATCH, scale=0.05)
    put(v + "patch_embed.proj.bias", WIDTH)
    cos, sin = rope_tables(grid, WIDTH // HEADS)
    sd[v + "rope.freqs_cos"], sd[v + "rope.freqs_sin"] = cos.to(dtype), sin.to(dtype)
    for i in range(layers):
        b = f"{v}blocks.{i}."
        norm(b + "norm1", WIDTH)
        put(b + "attn.q_bias", WIDTH)
        put(b + "attn.v_bias", WIDTH)
        for name in ("q_proj", "k_proj", "v_proj"):
            put(b + f"attn.{name}.weight", WIDTH, WIDTH)
        norm(b + "attn.inner_attn_ln", WIDTH)
        put(b + "attn.proj.weight", WIDTH, WIDTH)
        put(b + "attn.proj.bias", WIDTH)
        sd[b + "attn.rope.freqs_cos"], sd[b + "attn.rope.freqs_sin"] = sd[v + "rope.freqs_cos"], sd[v + "rope.freqs_sin"]
        norm(b + "norm2", WIDTH)
        for name, shape in (("w1", (2 * WIDTH, WIDTH)), ("w2", (2 * WIDTH, WIDTH)), ("w3", (WIDTH, 2 * WIDTH))):
            put(b + f"mlp.{name}.weight", *shape)
            put(b + f"mlp.{name}.bias", shape[0])
        norm(b + "mlp.ffn_ln", 2 * WIDTH)
    norm(v + "norm", WIDTH)
    put(v + "head.weight", 16, WIDTH)
    put(v + "head.bias", 16)
    put("visual_proj.weight", TEXT, WIDTH)
    put("visual_proj.bias", TEXT)
    return sd


def text_model_dir(path) -> str:
    """A local 'BGE' directory: BERT config (heads and other non-shape settings) + the WordPiece tokenizer."""
    tokenizer = wordpiece_tokenizer(model_max_length=512)
    BertConfig(vocab_size=len(tokenizer), hidden_size=TEXT, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
               intermediate_size=2 * TEXT, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
