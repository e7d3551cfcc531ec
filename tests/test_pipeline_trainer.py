"""The ecosystem around the model: a locally trained tokenizer, pipeline("text-generation"), Trainer."""

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
    pipeline,
)

from hyena_hf import HyenaConfig, HyenaForCausalLM

from conftest import tiny_config

TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "a hyena laughs in the night while the fox sleeps",
    "long convolutions replace attention in the hyena operator",
    "the dog and the fox are friends of the hyena",
] * 8


def train_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[EOS]"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")


def text_model(tokenizer: PreTrainedTokenizerFast) -> HyenaForCausalLM:
    """A small seeded Hyena LM over ``tokenizer``'s vocabulary (512 positions), for the tests that read text."""
    torch.manual_seed(0)
    config = HyenaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        max_position_embeddings=512,
        filter_emb_dim=5,
        filter_order=16,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return HyenaForCausalLM(config).eval()


def test_pipeline_text_generation_with_local_tokenizer(tmp_path):
    tokenizer = train_tokenizer()
    torch.manual_seed(0)
    model = HyenaForCausalLM(
        tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    )
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    generator = pipeline("text-generation", model=str(tmp_path), tokenizer=str(tmp_path))
    assert isinstance(generator.model, HyenaForCausalLM)
    result = generator("the quick brown", max_new_tokens=5, do_sample=False)
    text = result[0]["generated_text"]
    assert text.startswith("the quick brown")
    ids = tokenizer("the quick brown", return_tensors="pt").input_ids
    direct = generator.model.generate(ids, max_new_tokens=5, do_sample=False)
    as_ids = generator("the quick brown", max_new_tokens=5, do_sample=False, return_tensors=True)
    assert as_ids[0]["generated_token_ids"] == direct[0].tolist()
    # batched prompts with left padding give what each prompt gives alone
    tokenizer.padding_side = "left"
    batch = generator(["the quick brown", "a hyena"], max_new_tokens=4, do_sample=False, batch_size=2)
    alone = generator("a hyena", max_new_tokens=4, do_sample=False)
    assert batch[1][0]["generated_text"] == alone[0]["generated_text"]


def test_trainer_step_lowers_loss(tmp_path):
    tokenizer = train_tokenizer()
    torch.manual_seed(0)
    model = HyenaForCausalLM(tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id))
    features = [tokenizer(line) for line in TEXT[:4]]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    batch = collator(features)

    def eval_loss():
        model.eval()
        with torch.no_grad():
            return model(**batch).loss.item()

    before = eval_loss()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=5,
        learning_rate=5e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=features * 5, data_collator=collator)
    trainer.train()
    after = eval_loss()
    assert after < before - 0.05, (before, after)
    trainer.save_model(str(tmp_path / "final"))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    reloaded.eval()
    with torch.no_grad():
        assert abs(reloaded(**batch).loss.item() - after) < 1e-5
