"""hyena-hf: Hyena, HyenaDNA and H3 as native transformers models.

Importing the package registers the model with the transformers Auto classes. The ``hyena-hf`` command is the one
exception: it defers that (and so importing torch and transformers) to the subcommands that need it, so that
``hyena-hf --help`` answers at once; code that runs inside it calls :func:`register_auto_classes`.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"
MODEL_NAMES = [
    "HyenaConfig",
    "HyenaModel",
    "HyenaForCausalLM",
    "HyenaForSequenceClassification",
    "HyenaPreTrainedModel",
    "HyenaDNATokenizer",
    "HyenaCache",
    "distill",
    "long_conv",
]  # registered and exposed lazily
__all__ = [*MODEL_NAMES, "register_auto_classes", "__version__"]


def register_auto_classes() -> None:
    """Register the Hyena classes with AutoConfig / AutoModel* / AutoTokenizer (idempotent) and expose them here."""
    from . import _registration

    globals().update({name: getattr(_registration, name) for name in MODEL_NAMES})


def __getattr__(name: str):
    if name in __all__:
        register_auto_classes()
        return globals()[name]
    raise AttributeError(f"module 'hyena_hf' has no attribute {name!r}")


if _os.path.basename((getattr(_sys, "argv", None) or [""])[0] or "") != "hyena-hf":
    register_auto_classes()
