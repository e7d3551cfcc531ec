"""transformers' common tokenizer tests for the HyenaDNA character tokenizer: the template that ``run.py`` installs as
``tests/models/hyenadna/test_tokenization_hyenadna.py`` in transformers' test tree (with a DNA sample text as
``fixtures/sample_text.txt``). Not collected by the project's test suite."""

import unittest

from hyena_hf import HyenaDNATokenizer

from ...test_tokenization_common import TokenizerTesterMixin


class HyenaDNATokenizerCommonTest(TokenizerTesterMixin, unittest.TestCase):
    tokenizer_class = HyenaDNATokenizer
    test_seq2seq = False
    test_sentencepiece = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()  # reads the sample text, makes the folder the tests load from
        HyenaDNATokenizer().save_pretrained(cls.tmpdirname)

    def get_input_output_texts(self, tokenizer):
        return "ACGTNACGT", "ACGTNACGT"
