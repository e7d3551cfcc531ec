"""transformers' common model tests for Hyena: the template that ``run.py`` (beside it) installs as
``tests/models/hyena/test_modeling_hyena.py`` inside transformers' own test tree (from the sdist of the installed
version). The model variant comes from ``HYENA_COMMON_VARIANT``. Not collected by the project's test suite: it
imports transformers' test mixins, which only exist in that tree."""

import os
import unittest

import torch
from transformers.models.auto import modeling_auto

from hyena_hf import HyenaConfig, HyenaForCausalLM, HyenaForSequenceClassification, HyenaModel

from ...test_configuration_common import ConfigTester
from ...test_modeling_common import ModelTesterMixin, ids_tensor
from ...test_training_mixin import TrainingTesterMixin

VARIANTS = {
    "hyena": {},
    "h3": dict(filter_type="h3", ssm_state_size=8),
    "hyena_attention": dict(attn_layer_idx=[1], num_attention_heads=4),
    "modal": dict(filter_type="modal", modal_state_size=6),
}
VARIANT = os.environ.get("HYENA_COMMON_VARIANT", "hyena")

# The common tests pick labels, and skip base models in training tests, by transformers' own name tables, which
# list only in-library models: register Hyena there as an in-library model would be.
modeling_auto.MODEL_MAPPING_NAMES["hyena"] = "HyenaModel"
modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES["hyena"] = "HyenaForCausalLM"
modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES["hyena"] = "HyenaForSequenceClassification"


class HyenaModelTester:
    """Tiny models (width 32, 2 layers) and a batch of 13 sequences of 7 tokens, the sizes Mamba's tester uses."""

    def __init__(self, parent, batch_size: int = 13, seq_length: int = 7, vocab_size: int = 99):
        self.parent = parent
        self.batch_size, self.seq_length, self.vocab_size = batch_size, seq_length, vocab_size
        self.hidden_size, self.num_hidden_layers, self.num_labels = 32, 2, 3
        self.is_training = True
        self.causal_lm_class = HyenaForCausalLM

    def get_config(self) -> HyenaConfig:
        special = self.vocab_size - 1
        return HyenaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            max_position_embeddings=64,
            filter_order=16,
            num_labels=self.num_labels,
            pad_token_id=special,
            bos_token_id=special,
            eos_token_id=special,
            **VARIANTS[VARIANT],
        )

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 1)
        return self.get_config(), {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


class HyenaCommonTest(ModelTesterMixin, TrainingTesterMixin, unittest.TestCase):
    model_tester = None
    all_model_classes = (HyenaModel, HyenaForCausalLM, HyenaForSequenceClassification)
    # The generation mixin's tests are not in the sdist; the project's tests/test_conformance.py and
    # tests/test_generation_cache.py cover generate.
    all_generative_model_classes = ()
    has_attentions = VARIANT == "hyena_attention"

    def setUp(self):
        self.model_tester = HyenaModelTester(self)
        self.config_tester = ConfigTester(
            self, config_class=HyenaConfig, common_properties=["hidden_size", "num_hidden_layers"]
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_attention_outputs(self):
        """Hybrid models return the weights of their attention layers only, as transformers' hybrids (Jamba, Bamba)
        do: one causal softmax ``(B, heads, L, L)`` per layer in ``attn_layer_idx``, asked for by argument or by
        config. (The common test expects one per layer.)"""
        if not self.has_attentions:
            self.skipTest(reason="no attention layers in this variant")
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        batch, length = inputs["input_ids"].shape
        heads = config.num_attention_heads
        for model_class in self.all_model_classes:
            for by_config in (False, True):
                model = model_class._from_config(config, attn_implementation="eager").eval()
                model.config.output_attentions = by_config
                with torch.no_grad():
                    out = model(**inputs, **({} if by_config else {"output_attentions": True}))
                self.assertEqual(len(out.attentions), len(config.attn_layer_idx))
                for weights in out.attentions:
                    self.assertEqual(tuple(weights.shape), (batch, heads, length, length))
                    torch.testing.assert_close(weights.sum(-1), torch.ones(batch, heads, length))
                    self.assertEqual(float(weights.triu(1).abs().max()), 0.0)
