"""VistaModel from configs: the three embeddings, the input layout of the fused pass, truncation, the ViT tower."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModel, BertModel

import gcl_hf  # noqa: F401 - registers VISTA
from gcl_hf.modeling.vista import VistaModel
from gcl_hf.modeling.vista.testing import tiny_vista, tiny_vista_config, tiny_vista_processor


@pytest.fixture
def model():
    return tiny_vista()


@pytest.fixture
def processor():
    return tiny_vista_processor()


def _pixels(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g)


def _texts(processor, texts, **kwargs):
    return processor.tokenizer(texts, padding=True, return_tensors="pt", **kwargs)


def test_text_only_is_plain_bert_cls(model, processor):
    batch = _texts(processor, ["a red car", "two dogs on a mat"])
    bert = BertModel(model.config.text_config, add_pooling_layer=False).eval()
    bert.load_state_dict(model.text_model.state_dict())
    with torch.no_grad():
        expected = bert(**batch).last_hidden_state[:, 0]
        got = model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_image_only_is_fused_with_the_empty_text(model, processor):
    pixels = _pixels()
    empty = _texts(processor, ["", ""])
    assert empty["input_ids"][0].tolist() == model.config.image_only_input_ids
    with torch.no_grad():
        image = model.get_image_features(pixels).pooler_output
        fused = model.get_fused_features(pixels, empty["input_ids"], empty["attention_mask"]).pooler_output
    torch.testing.assert_close(image, fused, rtol=0, atol=0)


def test_padded_fused_row_equals_the_row_alone(model, processor):
    pixels = _pixels()
    batch = _texts(processor, ["a cat", "a much longer caption about a cat on a red mat"])
    alone = _texts(processor, ["a cat"])
    assert batch["input_ids"].shape[1] > alone["input_ids"].shape[1]
    with torch.no_grad():
        both = model.get_fused_features(pixels, batch["input_ids"], batch["attention_mask"]).pooler_output
        one = model.get_fused_features(pixels[:1], alone["input_ids"], alone["attention_mask"]).pooler_output
    torch.testing.assert_close(both[:1], one, rtol=1e-5, atol=1e-5)


def test_fused_input_layout(model, processor):
    """The encoder reads [CLS] (pos 0), P image tokens (pos 1..P, no token type), text[1:] (pos P+1...)."""
    pixels = _pixels(1)
    text = _texts(processor, ["a cat"])
    seen = {}
    def grab(module, args):
        seen["h"] = args[0]

    hook = model.text_model.encoder.register_forward_pre_hook(grab)
    with torch.no_grad():
        model.get_fused_features(pixels, text["input_ids"], text["attention_mask"]).pooler_output
        hook.remove()
        emb = model.text_model.embeddings
        p = model.config.num_image_tokens
        patches = model.vision_model(pixels).last_hidden_state[:, 1:]
        image = emb.LayerNorm(model.visual_projection(patches) + emb.position_embeddings.weight[1:1 + p])
        ids = text["input_ids"][0]
        tt = emb.token_type_embeddings.weight[0]
        positions = [0] + list(range(p + 1, p + len(ids)))
        words = emb.LayerNorm(emb.word_embeddings(ids) + tt + emb.position_embeddings.weight[positions])
        expected = torch.cat([words[:1], image[0], words[1:]])[None]
    assert seen["h"].shape == (1, 1 + p + len(ids) - 1, model.config.text_config.hidden_size)
    torch.testing.assert_close(seen["h"], expected, rtol=1e-6, atol=1e-6)


def test_over_long_fused_text_is_truncated_with_its_sep(model, processor, caplog):
    limit = model.max_fused_text_length
    assert limit == 64 - 16
    long_text = " ".join(["cat"] * 60)
    full = _texts(processor, [long_text])
    assert full["input_ids"].shape[1] > limit
    cut = _texts(processor, [long_text], truncation=True, max_length=limit)
    pixels = _pixels(1)
    with torch.no_grad():
        got = model.get_fused_features(pixels, full["input_ids"], full["attention_mask"]).pooler_output
        expected = model.get_fused_features(pixels, cut["input_ids"], cut["attention_mask"]).pooler_output
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert f"longer than {limit} tokens" in caplog.text


def test_one_vit_pass_for_the_three_embeddings(model, processor):
    calls = []
    model.vision_model.register_forward_hook(lambda *a: calls.append(1))
    batch = _texts(processor, ["a cat", "a dog"])
    pixels = _pixels()
    with torch.no_grad():
        image, text, fused = model.get_image_text_fused_features(pixels, batch["input_ids"], batch["attention_mask"])
    assert len(calls) == 1
    with torch.no_grad():
        torch.testing.assert_close(image, model.get_image_features(pixels).pooler_output)
        torch.testing.assert_close(text, model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output)
        torch.testing.assert_close(fused, model.get_fused_features(pixels, batch["input_ids"],
                                                                   batch["attention_mask"]).pooler_output)


def test_patch_dropout_only_in_train_mode():
    config = tiny_vista_config()
    config.vision_config.patch_dropout = 0.5
    torch.manual_seed(0)
    model = VistaModel(config)
    pixels = _pixels(2)
    model.train()
    assert model.vision_model(pixels).last_hidden_state.shape[1] == 1 + 8
    model.eval()
    with torch.no_grad():
        a, b = model.vision_model(pixels).last_hidden_state, model.vision_model(pixels).last_hidden_state
    assert a.shape[1] == 1 + 16
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sdpa_and_eager_vit_agree():
    sdpa = tiny_vista()
    config = tiny_vista_config()
    config.vision_config._attn_implementation = "eager"
    eager = VistaModel(config).eval()
    eager.load_state_dict(sdpa.state_dict())
    assert eager.vision_model.config._attn_implementation == "eager"
    with torch.no_grad():
        torch.testing.assert_close(eager.vision_model(_pixels()).last_hidden_state,
                                   sdpa.vision_model(_pixels()).last_hidden_state, rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(model, processor):
    batch = _texts(processor, ["a cat", "a dog"])
    pixels = _pixels()

    def grads(m):
        m.train()
        m.zero_grad()
        out = m.get_image_text_fused_features(pixels, batch["input_ids"], batch["attention_mask"])
        sum(o.square().sum() for o in out).backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    plain = grads(model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.vision_model.layers[0].gradient_checkpointing and model.text_model.encoder.layer[0].gradient_checkpointing
    checkpointed = grads(model)
    assert plain.keys() == checkpointed.keys() and any("vision_model" in n for n in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6)


def test_save_and_auto_load(model, tmp_path, processor):
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is VistaModel
    pixels = _pixels()
    with torch.no_grad():
        torch.testing.assert_close(loaded.get_image_features(pixels).pooler_output, model.get_image_features(pixels).pooler_output,
                                   rtol=0, atol=0)


def test_processor_batch_runs_the_model(model, processor):
    image = Image.new("RGB", (40, 33), (200, 10, 10))
    batch = processor(images=[image], text=["a red square"], return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    assert out.fused_embeds.shape == (1, 32) and torch.isfinite(F.normalize(out.fused_embeds, dim=-1)).all()


def test_xlm_roberta_text_encoder(processor):
    """bge-m3's layout: an XLM-R text encoder (its own position offsets for texts; the fused layout as BERT's)."""
    from transformers import XLMRobertaModel

    model = tiny_vista(text_model_type="xlm-roberta")
    assert type(model.text_model) is XLMRobertaModel
    batch = _texts(processor, ["a cat", "a dog on a red mat"])
    reference = XLMRobertaModel(model.config.text_config, add_pooling_layer=False).eval()
    reference.load_state_dict(model.text_model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output,
                                   reference(**batch).last_hidden_state[:, 0], rtol=0, atol=0)
        image, _, fused = model.get_image_text_fused_features(_pixels(), batch["input_ids"], batch["attention_mask"])
    assert image.shape == fused.shape == (2, 32) and not torch.allclose(image, fused)
