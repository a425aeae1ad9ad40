"""hf_embgpt: nanoGPT's GPT-2 as a transformers model.

Importing the package registers EmbGPT with transformers' Auto classes, so `AutoModelForCausalLM.from_pretrained`
loads EmbGPT folders without `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
)

from .block_size import crop_block_size, extend_block_size
from .configuration_embgpt import PRESETS, EmbGPTConfig
from .modeling_embgpt import (
    EmbGPTForCausalLM,
    EmbGPTForSequenceClassification,
    EmbGPTModel,
    EmbGPTPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register(EmbGPTConfig.model_type, EmbGPTConfig, exist_ok=True)
AutoModel.register(EmbGPTConfig, EmbGPTModel, exist_ok=True)
AutoModelForCausalLM.register(EmbGPTConfig, EmbGPTForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(EmbGPTConfig, EmbGPTForSequenceClassification, exist_ok=True)

__all__ = [
    "PRESETS",
    "EmbGPTConfig",
    "EmbGPTPreTrainedModel",
    "EmbGPTModel",
    "EmbGPTForCausalLM",
    "EmbGPTForSequenceClassification",
    "crop_block_size",
    "extend_block_size",
]
