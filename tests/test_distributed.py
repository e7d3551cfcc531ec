"""Multi-process training on CPU (gloo, 2 processes via torchrun): same loss and update as one process on the
same global batch, for DDP and FSDP; and device_map="auto" loading with disk offload."""

import os
import signal
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
    _torchrun("distributed_step.py", mode, str(out))
    result = torch.load(out, weights_only=True)
    model, batch = tiny_setup()
    loss = step(model, batch)
    assert abs(result["loss"].item() - loss.item()) < 1e-5
    reference = model.state_dict()
    assert set(result["state"]) == set(reference)
    for key, value in reference.items():
        assert torch.allclose(result["state"][key], value, atol=1e-5), key


def _torchrun(script: str, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / script), *args]
    # own process group, so a hung run is killed with all its workers instead of leaving orphans behind
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        raise AssertionError(f"torchrun {script} timed out: {stderr[-2000:]}")
    assert proc.returncode == 0, stderr[-3000:]


def test_trainer_under_torchrun_ddp_equals_single_process(tmp_path):
    """The user path: a Trainer script launched with torchrun (2 processes, global batch 2 x 2) takes the same step
    as the same script in one process with batch 4."""
    from distributed_trainer import main as trainer_step

    _torchrun("distributed_trainer.py", str(tmp_path / "ddp"), "2")
    ddp = torch.load(tmp_path / "ddp" / "result.pt", weights_only=True)
    trainer_step(str(tmp_path / "single"), 4)
    single = torch.load(tmp_path / "single" / "result.pt", weights_only=True)
    assert abs(ddp["loss"] - single["loss"]) < 1e-5
    for key, value in single["state"].items():
        assert torch.allclose(ddp["state"][key], value, atol=1e-5), key


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
