"""Multi-process training on CPU (gloo, 2 processes via torchrun): same loss and update as one process on the
same global batch, for DDP and FSDP; and device_map="auto" loading with disk offload."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
import torch
from distributed_step import step, tiny_setup
from transformers import AutoModelForCausalLM

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


def _kill_run(proc: subprocess.Popen, marker: str) -> None:
    """Kill torchrun and its workers. The workers run in sessions of their own and can outlive the agent, so they
    are found by their command line (``marker`` is unique to this run) as well as by parentage."""
    victims = []
    try:
        victims = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        pass
    for candidate in psutil.process_iter(["cmdline"]):
        if candidate.pid != os.getpid() and marker in " ".join(candidate.info["cmdline"] or []):
            victims.append(candidate)
    for victim in [psutil.Process(proc.pid)] + victims if proc.poll() is None else victims:
        try:
            victim.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def _torchrun(script: str, *args: str, timeout: float = 300.0) -> None:
    """torchrun --standalone with 2 CPU workers; a run that fails or hangs fails the test, and nothing of it survives.
    (The worker scripts skip interpreter teardown, where gloo's DDP teardown could deadlock.)"""
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",  # CPU workers even on a GPU machine (FSDP would put both ranks on cuda:0, cuda:1)
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(HERE / script),
        *args,
    ]
    # output to a file, not a pipe: an orphaned worker holding a pipe open would block the reader forever
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = f"hung for {timeout:.0f} s"
        finally:
            _kill_run(proc, args[0])
        log.seek(0)
        assert returncode == 0, f"torchrun {script}: {returncode}: {log.read()[-3000:]}"


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
        tmp_path / "model", device_map="auto", max_memory={"cpu": "60KB"}, offload_folder=str(tmp_path / "offload")
    )
    assert "disk" in set(offloaded.hf_device_map.values())
    with torch.no_grad():
        assert torch.allclose(offloaded(batch).logits, model.eval()(batch).logits, atol=1e-5)
    prompt = batch[:2, :10]
    expected = model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(offloaded.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0), expected)
