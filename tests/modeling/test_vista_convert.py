"""The VISTA .pth conversion on a tiny state dict in the reference's key layout."""

import pytest
import torch
from transformers import AutoModel, AutoProcessor, BertConfig, BertModel

import gcl_hf  # noqa: F401 - registers VISTA
from gcl_hf.modeling.vista import VistaModel, VistaProcessor
from gcl_hf.modeling.vista.convert import VistaConversionError, convert_vista, infer_vision_config

from tests.modeling.vista_layout import reference_state_dict, text_model_dir


@pytest.fixture
def converted(tmp_path):
    sd = reference_state_dict()
    torch.save(sd, tmp_path / "Visualized_tiny.pth")
    result = convert_vista(tmp_path / "Visualized_tiny.pth", text_model_dir(tmp_path / "bge"), tmp_path / "out")
    return sd, result


def test_sizes_from_shapes():
    config = infer_vision_config(reference_state_dict())
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
            config.image_size, config.patch_size) == (32, 2, 2, 64, 32, 8)


def test_conversion_is_strict_and_complete(converted):
    sd, result = converted
    model = AutoModel.from_pretrained(result.output).eval()
    assert type(model) is VistaModel
    assert result.unused_keys == sorted(
        ["bge_pooler.dense.weight", "bge_pooler.dense.bias", "model_visual.logit_scale",
         "model_visual.visual.norm.weight", "model_visual.visual.norm.bias", "model_visual.visual.head.weight",
         "model_visual.visual.head.bias", "model_visual.visual.rope.freqs_cos", "model_visual.visual.rope.freqs_sin"]
        + [f"model_visual.visual.blocks.{i}.attn.rope.freqs_{f}" for i in range(2) for f in ("cos", "sin")])
    state = model.state_dict()
    torch.testing.assert_close(state["vision_model.layers.1.attn.q_proj.bias"], sd["model_visual.visual.blocks.1.attn.q_bias"])
    torch.testing.assert_close(state["vision_model.layers.0.attn.v_proj.bias"], sd["model_visual.visual.blocks.0.attn.v_bias"])
    torch.testing.assert_close(state["vision_model.layers.0.mlp.gate_proj.weight"], sd["model_visual.visual.blocks.0.mlp.w1.weight"])
    torch.testing.assert_close(state["visual_projection.weight"], sd["visual_proj.weight"])
    assert model.config.image_only_input_ids == [2, 3]  # the tokenizer's [CLS], [SEP]
    assert model.config.vision_config.rope_pretrain_grid == 16
    processor = AutoProcessor.from_pretrained(result.output)
    assert type(processor) is VistaProcessor
    assert processor.tokenizer.model_max_length == 64 - 16  # fused texts: positions minus image tokens


def test_text_path_equals_bert_on_the_bge_weights(converted):
    sd, result = converted
    model = AutoModel.from_pretrained(result.output).eval()
    bert = BertModel(BertConfig.from_pretrained(result.output.parent / "bge"), add_pooling_layer=False).eval()
    bert.load_state_dict({k.replace("bge_embeddings.", "embeddings.").replace("bge_encoder.", "encoder."): v
                          for k, v in sd.items() if k.startswith(("bge_embeddings.", "bge_encoder."))})
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        torch.testing.assert_close(model.get_text_features(ids).pooler_output, bert(input_ids=ids).last_hidden_state[:, 0],
                                   rtol=0, atol=0)


def test_round_trip_keeps_the_source_dtype(tmp_path):
    sd = reference_state_dict(dtype=torch.float16)
    torch.save(sd, tmp_path / "v.pth")
    result = convert_vista(tmp_path / "v.pth", text_model_dir(tmp_path / "bge"), tmp_path / "out")
    assert result.dtype == torch.float16
    model = VistaModel.from_pretrained(result.output, dtype="auto")
    assert model.visual_projection.weight.dtype == torch.float16
    torch.testing.assert_close(model.visual_projection.weight, sd["visual_proj.weight"], rtol=0, atol=0)


def test_unknown_key_is_refused_by_name(tmp_path):
    sd = reference_state_dict()
    sd["model_visual.visual.blocks.0.attn.relative_position_bias_table"] = torch.zeros(3, 2)
    torch.save(sd, tmp_path / "v.pth")
    with pytest.raises(VistaConversionError, match="relative_position_bias_table"):
        convert_vista(tmp_path / "v.pth", text_model_dir(tmp_path / "bge"), tmp_path / "out")


def test_missing_key_is_refused_by_name(tmp_path):
    sd = reference_state_dict()
    del sd["model_visual.visual.blocks.1.mlp.w3.weight"]
    torch.save(sd, tmp_path / "v.pth")
    with pytest.raises(VistaConversionError, match=r"vision_model\.layers\.1\.mlp\.down_proj\.weight"):
        convert_vista(tmp_path / "v.pth", text_model_dir(tmp_path / "bge"), tmp_path / "out")


def test_wrong_rope_tables_are_refused(tmp_path):
    sd = reference_state_dict()
    sd["model_visual.visual.rope.freqs_cos"] = sd["model_visual.visual.rope.freqs_cos"] * 0.5
    torch.save(sd, tmp_path / "v.pth")
    with pytest.raises(VistaConversionError, match="rope.freqs_cos"):
        convert_vista(tmp_path / "v.pth", text_model_dir(tmp_path / "bge"), tmp_path / "out")


def test_pickled_objects_are_not_loaded(tmp_path):
    import argparse

    torch.save({"x": argparse.Namespace(a=1)}, tmp_path / "v.pth")  # an object: only a full unpickler builds it
    with pytest.raises(VistaConversionError, match=r"v\.pth: not a plain state_dict.*weights_only=True"):
        convert_vista(tmp_path / "v.pth", text_model_dir(tmp_path / "bge"), tmp_path / "out")
