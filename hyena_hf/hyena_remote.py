"""Remote-code entry point of saved model folders (see :mod:`hyena_hf.remote_code`): the installed hyena_hf package
when present, else the copies of its modules beside this file (PyTorch long convolution only)."""

try:
    from hyena_hf import HyenaConfig, HyenaForCausalLM, HyenaForSequenceClassification, HyenaModel
except ImportError:
    from .configuration_hyena import HyenaConfig
    from .modeling_hyena import HyenaForCausalLM, HyenaForSequenceClassification, HyenaModel

__all__ = ["HyenaConfig", "HyenaModel", "HyenaForCausalLM", "HyenaForSequenceClassification"]
