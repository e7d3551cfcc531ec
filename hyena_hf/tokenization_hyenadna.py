"""HyenaDNA's character tokenizer as a transformers tokenizer.

Vocabulary (fixed by the released models): ``[CLS]``0 ``[SEP]``1 ``[BOS]``2 ``[MASK]``3 ``[PAD]``4 ``[RESERVED]``5
``[UNK]``6, then the characters (A7 C8 G9 T10 N11). Case-sensitive: anything else is ``[UNK]``.
``add_special_tokens`` appends ``[SEP]`` (the pretraining tokenizer the models were trained with); with
``wrap_with_cls=True`` it wraps as ``[CLS] ... [SEP]`` (the standalone / colab tokenizer). Pads on the left.
"""

from __future__ import annotations

import json
import os

from transformers import PreTrainedTokenizer

from .remote_code import write_tokenizer_code

SPECIAL_TOKENS = ["[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]"]
DNA_CHARACTERS = ["A", "C", "G", "T", "N"]


def _read_vocab(vocab_file: str) -> dict[str, int]:
    """``vocab.json``: token -> id, distinct non-negative integer ids, every special token present; else one line
    naming the file and the fault."""
    try:
        with open(vocab_file, encoding="utf-8") as handle:
            vocab = json.load(handle)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"tokenizer vocabulary {vocab_file} cannot be read: {str(exc).splitlines()[0]}") from None
    if not isinstance(vocab, dict):
        raise ValueError(f"tokenizer vocabulary {vocab_file} must map tokens to ids, got a {type(vocab).__name__}")
    bad = [k for k, v in vocab.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0]
    if bad:
        raise ValueError(
            f"tokenizer vocabulary {vocab_file}: token {bad[0]!r} has id {vocab[bad[0]]!r}, not a non-negative integer"
        )
    if len(set(vocab.values())) != len(vocab):
        raise ValueError(f"tokenizer vocabulary {vocab_file} gives two tokens the same id")
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer vocabulary {vocab_file} lacks the special tokens {missing}")
    return vocab


class HyenaDNATokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "vocab.json"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str | None = None,
        characters: list[str] | None = None,
        wrap_with_cls: bool = False,
        model_max_length: int = 1_000_002,
        padding_side: str = "left",
        **kwargs,
    ):
        if vocab_file is not None:
            self._vocab = _read_vocab(vocab_file)
        else:
            chars = list(characters or DNA_CHARACTERS)
            self._vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + chars)}
        self._ids_to_tokens = {i: tok for tok, i in self._vocab.items()}
        self.wrap_with_cls = wrap_with_cls
        for name, token in (
            ("cls_token", "[CLS]"),
            ("sep_token", "[SEP]"),
            ("bos_token", "[BOS]"),
            ("eos_token", "[SEP]"),
            ("mask_token", "[MASK]"),
            ("pad_token", "[PAD]"),
            ("unk_token", "[UNK]"),
        ):
            kwargs.setdefault(name, token)
        super().__init__(
            characters=characters,
            model_max_length=model_max_length,
            padding_side=padding_side,
            wrap_with_cls=wrap_with_cls,
            **kwargs,
        )

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def get_vocab(self) -> dict[str, int]:
        """The characters and special tokens, and any tokens added since (``len(tokenizer)`` counts this, and
        ``add_tokens`` numbers new tokens from it)."""
        return {**self._vocab, **self.added_tokens_encoder}

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return list(text)

    def _convert_token_to_id(self, token: str) -> int:
        return self._vocab.get(token, self._vocab["[UNK]"])

    def _convert_id_to_token(self, index: int) -> str:
        return self._ids_to_tokens.get(index, "[UNK]")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        sep, cls = [self.sep_token_id], [self.cls_token_id]
        first = (cls if self.wrap_with_cls else []) + token_ids_0 + sep
        return first if token_ids_1 is None else first + token_ids_1 + sep

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
        first = ([1] if self.wrap_with_cls else []) + [0] * len(token_ids_0) + [1]
        return first if token_ids_1 is None else first + [0] * len(token_ids_1) + [1]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return (1 if self.wrap_with_cls else 0) + 1 + (1 if pair else 0)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save, plus the tokenizer's code and an ``auto_map`` (see :mod:`hyena_hf.remote_code`), so
        ``AutoTokenizer.from_pretrained(folder, trust_remote_code=True)`` works where hyena-hf is not installed."""
        files = super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("filename_prefix") and os.path.isfile(os.path.join(save_directory, "tokenizer_config.json")):
            write_tokenizer_code(save_directory)
        return files

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        path = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "vocab.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self._vocab, handle, indent=2)
        return (path,)
