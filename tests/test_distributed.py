"""Multi-process training on CPU (gloo, 2 processes via torchrun): same loss and update as one process on the
same global batch, for DDP and FSDP; and device_map="auto" loading with disk offload."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from distributed_step import step, tiny_setup

HERE = Path(__file__).parent


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_process_step_equals_single_process(mode, tmp_path):
    out = tmp_path / f"{mode}.pt"
    env = {**os.environ, "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / "distributed_step.py"), mode, str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = torch.load(out, weights_only=True)
    model, batch = tiny_setup()
    loss = step(model, batch)
    assert abs(result["loss"].item() - loss.item()) < 1e-5
    reference = model.state_dict()
    assert set(result["state"]) == set(reference)
    for key, value in reference.items():
        assert torch.allclose(result["state"][key], value, atol=1e-5), key


def test_device_map_auto_with_disk_offload(tmp_path):
    model, batch = tiny_setup()
    model.save_pretrained(tmp_path / "model")
    offloaded = AutoModelForCausalLM.from_pretrained(
        tmp_path / "model", device_map="auto", max_memory={"cpu": "60KB"}, offload_folder=str(tmp_path / "offload"))
    assert "disk" in set(offloaded.hf_device_map.values())
    with torch.no_grad():
        assert torch.allclose(offloaded(batch).logits, model.eval()(batch).logits, atol=1e-5)
    prompt = batch[:2, :10]
    expected = model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(offloaded.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0), expected)
