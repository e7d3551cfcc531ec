"""Registers the Hyena classes with the transformers Auto classes (imported by ``hyena_hf``; see its docstring)."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from . import MODEL_NAMES
from .cache_hyena import HyenaCache  # noqa: F401  (re-exported by hyena_hf)
from .configuration_hyena import HyenaConfig
from .distillation import distill  # noqa: F401
from .modeling_hyena import (  # noqa: F401
    HyenaForCausalLM,
    HyenaForSequenceClassification,
    HyenaModel,
    HyenaPreTrainedModel,
)
from .ops import long_conv  # noqa: F401
from .tokenization_hyenadna import HyenaDNATokenizer

AutoConfig.register(HyenaConfig.model_type, HyenaConfig, exist_ok=True)
AutoModel.register(HyenaConfig, HyenaModel, exist_ok=True)
AutoModelForCausalLM.register(HyenaConfig, HyenaForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(HyenaConfig, HyenaForSequenceClassification, exist_ok=True)
# Lets AutoTokenizer find HyenaDNATokenizer by the class name saved in tokenizer_config.json.
AutoTokenizer.register(HyenaConfig, tokenizer_class=HyenaDNATokenizer, exist_ok=True)

__all__ = list(MODEL_NAMES)
