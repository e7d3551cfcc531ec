"""Remote-code entry point of the DNA tokenizer (see :mod:`hyena_hf.remote_code`): the installed hyena_hf package
when present, else the copy of its module beside this file."""

try:
    from hyena_hf import HyenaDNATokenizer
except ImportError:
    from .tokenization_hyenadna import HyenaDNATokenizer

__all__ = ["HyenaDNATokenizer"]
