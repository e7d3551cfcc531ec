import functools
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never touch the network
# The device the model tests run on: HYENA_TEST_DEVICE=cuda runs them on a GPU (Triton with the real compiler there);
# on CPU the Triton kernels run through its interpreter, which must be set before triton.jit decorators run.
TEST_DEVICE = torch.device(os.environ.get("HYENA_TEST_DEVICE", "cpu"))
if TEST_DEVICE.type == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import hyena_hf  # noqa: F401  (registers the Auto classes)
from hyena_hf import HyenaConfig, HyenaForCausalLM
from hyena_hf.conversion import convert_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "original"
CHECKPOINT_FILES = {
    "safari_hyena_lm": "model.ckpt",
    "safari_hyena_order3_attn": "model.ckpt",
    "hyenadna_lm": "weights.ckpt",
    "hyenadna_lm_ckpt_layers": "weights.ckpt",
    "hyenadna_lm_lightning_full": "weights.ckpt",
    "h3_lm": "model.pt",
}
FIXTURE_NAMES = sorted(CHECKPOINT_FILES)


def fixture_dir(name: str) -> Path:
    return FIXTURES / name


@functools.cache
def fixture_tensors(name: str) -> dict:
    return load_file(str(FIXTURES / name / "fixture.safetensors"))


def fixture_meta(name: str) -> dict:
    return json.loads((FIXTURES / name / "meta.json").read_text())


def load_fixture_model(name: str, **kwargs) -> HyenaForCausalLM:
    folder = FIXTURES / name
    return convert_checkpoint(folder / CHECKPOINT_FILES[name], folder / "meta.json", **kwargs)


def tiny_config(**overrides) -> HyenaConfig:
    fields = dict(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        max_position_embeddings=64,
        filter_order=16,
        filter_emb_dim=5,
        filter_sin_freq=10.0,
        embd_pdrop=0.0,
        pad_token_id=0,
    )
    fields.update(overrides)
    return HyenaConfig(**fields)


def tiny_model(seed: int = 0, **overrides) -> HyenaForCausalLM:
    torch.manual_seed(seed)
    return HyenaForCausalLM(tiny_config(**overrides)).eval()


def left_padded_batch(length: int, pad: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of ``length`` random ids (1..49) and their attention mask, the second row left-padded by ``pad``."""
    ids = torch.randint(1, 50, (2, length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[1, :pad] = 0
    return ids, mask


# The three mixer families, and a hybrid with rotary attention: most behavioural tests run on each.
VARIANTS = {
    "hyena2": {},
    "hyena3_attn_rotary": dict(hyena_order=3, attn_layer_idx=[1], num_attention_heads=4, rotary_emb_dim=8),
    "h3_attn": dict(filter_type="h3", ssm_state_size=8, attn_layer_idx=[0], num_attention_heads=2),
    "modal3": dict(filter_type="modal", hyena_order=3, modal_state_size=6),
}


@pytest.fixture
def device() -> torch.device:
    """Where model tests build their models and tensors (HYENA_TEST_DEVICE, default cpu)."""
    if TEST_DEVICE.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("HYENA_TEST_DEVICE=cuda but torch sees no CUDA device")
    return TEST_DEVICE


@pytest.fixture
def small_blocks(monkeypatch):
    """CPU engines' block sizes shrunk so that every path runs over several blocks with a ragged last one."""
    import hyena_hf.ops as ops
    import hyena_hf.ops_cpu as ops_cpu

    monkeypatch.setattr(ops, "FFT_BLOCK_BYTES", 3000)
    monkeypatch.setattr(ops_cpu, "INFERENCE_BLOCK_BYTES", 5000)
    monkeypatch.setattr(ops_cpu, "INFERENCE_CHUNK_ROWS", 7)


@pytest.fixture
def relaxed_everywhere(monkeypatch):
    """Relaxed exact decoding (hyena_hf.decoding) from the first step on any device, with windows of 4 tokens (so
    they reopen often); returns the module."""
    import hyena_hf.decoding as decoding

    monkeypatch.setattr(decoding, "EXACT_RELAXED_MIN_HISTORY", {})
    monkeypatch.setattr(decoding, "EXACT_RELAXED_MIN_HISTORY_ELSEWHERE", 0)
    monkeypatch.setattr(decoding, "RELAXED_MIN_WINDOW", 4)
    return decoding


@pytest.fixture(params=sorted(VARIANTS))
def variant_model(request, device):
    return tiny_model(**VARIANTS[request.param]).to(device)
