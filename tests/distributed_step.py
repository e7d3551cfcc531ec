"""One optimisation step of a tiny Hyena LM under torchrun (gloo, CPU): DDP or FSDP2 (one shard unit per
``_no_split_modules`` block). Rank 0 writes the global-batch loss and the updated parameters to OUT."""

import os
import sys

import torch
import torch.distributed as dist

from hyena_hf import HyenaConfig, HyenaForCausalLM


def tiny_setup():
    torch.manual_seed(0)
    config = HyenaConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=3,
        intermediate_size=64,
        max_position_embeddings=32,
        filter_order=16,
        filter_emb_dim=5,
        embd_pdrop=0.0,
        hyena_order=3,
        attn_layer_idx=[1],
        num_attention_heads=4,
    )
    model = HyenaForCausalLM(config)
    batch = torch.randint(0, 50, (4, 24), generator=torch.Generator().manual_seed(1))
    return model, batch


def step(model, batch, lr=0.5):
    """Mean loss of `batch`, one SGD step; returns the loss."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss = model(batch, labels=batch).loss
    loss.backward()
    opt.step()
    return loss.detach()


def main(mode: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, batch = tiny_setup()
    local = batch.chunk(world)[rank]
    if mode == "ddp":
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    elif mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        block_classes = tuple(type(m) for m in model.modules() if type(m).__name__ in model._no_split_modules)
        for module in model.modules():
            if isinstance(module, block_classes):
                fully_shard(module)
        wrapped = fully_shard(model)
    else:
        raise ValueError(mode)
    loss = step(wrapped, local)
    dist.all_reduce(loss)
    state = {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in model.state_dict().items()
    }
    if rank == 0:
        torch.save({"loss": loss / world, "state": state}, out)
    dist.destroy_process_group()
    exit_before_teardown()


def exit_before_teardown() -> None:
    """Exit while the DDP wrapper is still referenced: freeing its reducer (when this frame's locals go, or at
    interpreter exit) can deadlock against gloo's worker thread (py-spy: ~ProcessGroupGloo joins a thread that waits
    for the GIL to free a tensor), which hung the suite about one run in three."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
