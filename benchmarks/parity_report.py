"""Max |port - original| logits on every golden fixture, float32 and float64.

python benchmarks/parity_report.py
"""

import torch
from safetensors.torch import load_file

import hyena_hf  # noqa: F401
from hyena_hf.conversion import convert_checkpoint

ROOT = "tests/fixtures/original/"
CASES = {
    "safari_hyena_lm": "model.ckpt",
    "safari_hyena_order3_attn": "model.ckpt",
    "hyenadna_lm": "weights.ckpt",
    "hyenadna_lm_ckpt_layers": "weights.ckpt",
    "hyenadna_lm_lightning_full": "weights.ckpt",
    "h3_lm": "model.pt",
}

for name, checkpoint in CASES.items():
    model = convert_checkpoint(ROOT + name + "/" + checkpoint, ROOT + name + "/meta.json")
    tensors = load_file(ROOT + name + "/fixture.safetensors")
    vocab = model.config.vocab_size
    for key in sorted(k for k in tensors if k.startswith("input_ids")):
        suffix = key[len("input_ids") :]
        with torch.no_grad():
            d32 = (model(tensors[key]).logits - tensors["logits" + suffix][..., :vocab]).abs().max().item()
            d64 = (
                (model.to(torch.float64)(tensors[key]).logits - tensors["logits" + suffix + "_fp64"][..., :vocab])
                .abs()
                .max()
                .item()
            )
            model.to(torch.float32)
        print(f"{name:28s} {key:16s} fp32 {d32:.2e}  fp64 {d64:.2e}")
