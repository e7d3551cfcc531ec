"""Saved model folders carry their own code, so they load where hyena-hf is not installed.

Every ``save_pretrained`` (and so ``hyena-hf convert`` and ``push_to_hub``) writes beside the weights a copy of the
modules the model needs and an ``auto_map`` in ``config.json`` / ``tokenizer_config.json``, as the HyenaDNA ``-hf``
and StripedHyena repositories do: ``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` then works
with transformers alone. The entry points (``hyena_remote.py``, ``hyena_remote_tokenizer.py``) import the installed
hyena_hf package when there is one, so an installed hyena-hf is always what runs; the copies are the fallback. Remote
code has no Triton kernels: it runs the PyTorch long convolution everywhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# The modules the model needs, copied flat (their relative imports keep working in transformers' module cache).
# The entry points (hyena_remote*.py) are modules of the package too.
MODEL_MODULES = (
    "hyena_remote.py",
    "configuration_hyena.py",
    "modeling_hyena.py",
    "attention_functions.py",
    "cache_hyena.py",
    "decoding.py",
    "diagonal_recurrence.py",
    "initialization.py",
    "losses.py",
    "model_inputs.py",
    "generation_hooks.py",
    "ops.py",
    "ops_cpu.py",
    "filter_spectra.py",
    "cpu_backbone.py",
    "precision.py",
    "pretrained_io.py",
    "remote_code.py",
)
TOKENIZER_MODULES = ("hyena_remote_tokenizer.py", "tokenization_hyenadna.py", "remote_code.py")

MODEL_AUTO_MAP = {
    "AutoConfig": "hyena_remote.HyenaConfig",
    "AutoModel": "hyena_remote.HyenaModel",
    "AutoModelForCausalLM": "hyena_remote.HyenaForCausalLM",
    "AutoModelForSequenceClassification": "hyena_remote.HyenaForSequenceClassification",
}
TOKENIZER_AUTO_MAP = {"AutoTokenizer": ["hyena_remote_tokenizer.HyenaDNATokenizer", None]}


def _copy_modules(folder: Path, names: tuple[str, ...]) -> None:
    """(The crossover table of ops.py is not copied: remote code runs the PyTorch path only.)"""
    source = Path(__file__).resolve().parent  # the package, or a remote-code copy of it: the same flat files
    for name in names:
        shutil.copyfile(source / name, folder / name)


def _add_auto_map(json_file: Path, auto_map: dict) -> None:
    data = json.loads(json_file.read_text())
    data["auto_map"] = {**data.get("auto_map", {}), **auto_map}
    json_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_model_code(folder: str | Path) -> None:
    """Copy the model's modules and entry point into a saved model folder and point ``config.json`` at them."""
    folder = Path(folder)
    _copy_modules(folder, MODEL_MODULES)
    _add_auto_map(folder / "config.json", MODEL_AUTO_MAP)


def write_tokenizer_code(folder: str | Path) -> None:
    """Copy the DNA tokenizer's module and entry point into a saved tokenizer folder (tokenizer_config.json)."""
    folder = Path(folder)
    _copy_modules(folder, TOKENIZER_MODULES)
    _add_auto_map(folder / "tokenizer_config.json", TOKENIZER_AUTO_MAP)
