"""One Trainer optimisation step of a tiny Hyena LM; under torchrun it runs as DDP on CPU (gloo).

usage: distributed_trainer.py OUT_DIR PER_DEVICE_BATCH
"""

import os
import sys

import torch
from datasets import Dataset
from distributed_step import exit_before_teardown, tiny_setup
from transformers import Trainer, TrainingArguments, default_data_collator


def main(out_dir: str, per_device_batch: int) -> None:
    model, batch = tiny_setup()
    data = Dataset.from_dict({"input_ids": batch.tolist(), "labels": batch.tolist()})
    args = TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=per_device_batch,
        max_steps=1,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        use_cpu=True,
        ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator)
    result = trainer.train()
    if trainer.is_world_process_zero():
        torch.save(
            {"loss": result.training_loss, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}},
            f"{out_dir}/result.pt",
        )
    if "WORLD_SIZE" in os.environ:  # under torchrun: exit while the trainer still holds the DDP model
        exit_before_teardown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
