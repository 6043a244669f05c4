"""The sub-commands' shared helpers: the processor finder's failure is one CLI line naming the model."""

import pytest

from gcl_hf import GCLModel
from gcl_hf.cli.common import CLIError, load_processor
from gcl_hf.testing import tiny_clip, tiny_processor


def test_load_processor_names_the_model_and_says_to_pass_processor(tmp_path):
    model = GCLModel.from_backbone(tiny_clip())
    with pytest.raises(CLIError, match=r"no processor found for 'org/not-cached'; pass --processor "
                                       r"\(tried org/not-cached: ") as err:
        load_processor("org/not-cached", model, revision="main")
    assert "\n" not in str(err.value)
    tiny_processor().save_pretrained(tmp_path)
    assert load_processor("org/not-cached", model, processor=str(tmp_path)).tokenizer("a dog")["input_ids"]
