"""VISTA (Visualized BGE) as a native transformers backbone: config, model, EVA02 tower, processor, conversion."""

from gcl_hf.modeling.vista.configuration_vista import VISTA_TEMPERATURE, Eva02VisionConfig, VistaConfig
from gcl_hf.modeling.vista.image_processing_vista import VistaImageProcessor, VistaProcessor
from gcl_hf.modeling.vista.modeling_vista import VISTA_LORA_TARGETS, VistaModel, VistaOutput, VistaPreTrainedModel

__all__ = ["Eva02VisionConfig", "VISTA_LORA_TARGETS", "VISTA_TEMPERATURE", "VistaConfig", "VistaImageProcessor",
           "VistaModel", "VistaOutput", "VistaPreTrainedModel", "VistaProcessor", "register"]


def register() -> None:
    """Register VISTA with transformers' auto classes (``import gcl_hf`` does this)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

    AutoConfig.register(VistaConfig.model_type, VistaConfig, exist_ok=True)
    AutoConfig.register(Eva02VisionConfig.model_type, Eva02VisionConfig, exist_ok=True)
    AutoModel.register(VistaConfig, VistaModel, exist_ok=True)
    AutoImageProcessor.register(VistaConfig, image_processor_classes={"pil": VistaImageProcessor}, exist_ok=True)
    AutoProcessor.register(VistaConfig, VistaProcessor, exist_ok=True)
