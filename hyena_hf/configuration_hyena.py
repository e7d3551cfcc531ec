"""Configuration of the Hyena family (Hyena / HyenaDNA / H3) as a transformers v5 config."""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

FILTER_TYPES = ("implicit", "h3", "modal")
LONG_CONV_IMPLS = ("auto", "torch", "triton")


class HyenaConfig(PreTrainedConfig):
    r"""
    Configuration of a Hyena-family language model.

    One config expresses the three original families:

    * ``filter_type="implicit"``: Hyena (safari ``HyenaOperator``) and HyenaDNA, long filters produced by a Sin-MLP
      over a positional embedding, with optional exponential modulation.
    * ``filter_type="h3"``: H3, a shift SSM on the keys and a diagonal (S4D) SSM on ``k * v``, bilinear discretisation.
    * ``filter_type="modal"``: long filters stored as poles/residues (distilled models, see ``hyena_hf.distill``).

    Layers listed in ``attn_layer_idx`` use causal multi-head attention instead of the long-convolution mixer.
    The original constructor names are accepted as aliases (``d_model``, ``n_layer``, ``d_inner``, ``l_max``,
    ``order``, ``emb_dim``, ``w``, ``shift``, ``d_state``, ...).

    Args:
        vocab_size: number of tokens the tokenizer produces. The embedding matrix is padded up to a multiple of
            ``pad_vocab_size_multiple`` rows (as the original code does); logits cover ``vocab_size`` columns only.
        hidden_size: model width (``d_model``).
        num_hidden_layers: number of blocks (``n_layer``).
        intermediate_size: MLP width (``d_inner``); ``None`` means ``4 * hidden_size``.
        max_position_embeddings: longest sequence (``l_max``); for implicit filters the filter length, a hard limit.
        hyena_order: depth of the Hyena recurrence (``order``), at least 2.
        filter_order: width of the implicit filter MLP.
        filter_emb_dim: positional embedding size fed to the filter MLP (``emb_dim``), odd and >= 3.
        filter_sin_freq: initial frequency of the Sin activations (``w``).
        filter_num_inner_mlps: number of hidden Linear+Sin layers in the filter MLP (``num_inner_mlps``).
        filter_use_bias: whether the skip term ``D`` of the long convolution is used (``bias``).
        train_pos_emb: whether the positional embedding ``z`` is a trained parameter (``lr_pos_emb > 0``).
        modulate / modulation_shift / modulation_fast_decay_pct / modulation_slow_decay_pct / modulation_target:
            exponential decay window ``h * (exp(-t |delta|) + shift)``.
        short_filter_order: length of the depthwise causal short convolution.
        hyena_num_heads / hyena_inner_factor: present in the original operator; only 1 is supported there.
        ssm_state_size: H3 state size ``d_state`` (shift-SSM length; the diagonal SSM keeps ``d_state // 2`` modes).
        h3_head_dim: H3 ``head_dim`` (1 in all released models).
        modal_state_size: number of modes per channel of modal filters.
        attn_layer_idx: indices of attention layers; ``num_attention_heads`` heads each.
        rotary_emb_dim: rotary embedding dimension of attention layers (0 = none).
        long_conv_impl: ``"auto" | "torch" | "triton"``; the environment variable ``HYENA_LONG_CONV_IMPL`` overrides it.
    """

    model_type = "hyena"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "d_model": "hidden_size",
        "n_layer": "num_hidden_layers",
        "d_inner": "intermediate_size",
        "l_max": "max_position_embeddings",
        "order": "hyena_order",
        "emb_dim": "filter_emb_dim",
        "w": "filter_sin_freq",
        "num_inner_mlps": "filter_num_inner_mlps",
        "shift": "modulation_shift",
        "fast_decay_pct": "modulation_fast_decay_pct",
        "slow_decay_pct": "modulation_slow_decay_pct",
        "target": "modulation_target",
        "d_state": "ssm_state_size",
        "num_heads": "num_attention_heads",
        "embed_dropout": "embd_pdrop",
        "resid_dropout": "resid_pdrop",
    }

    vocab_size: int = 50257
    hidden_size: int = 768
    num_hidden_layers: int = 12
    intermediate_size: int | None = None
    max_position_embeddings: int = 2048
    pad_vocab_size_multiple: int = 8
    layer_norm_epsilon: float = 1e-5
    residual_in_fp32: bool = True
    hidden_act: str = "gelu_pytorch_tanh"
    initializer_range: float = 0.02
    rescale_prenorm_residual: bool = True
    embd_pdrop: float = 0.1
    resid_pdrop: float = 0.0
    tie_word_embeddings: bool = True

    filter_type: str = "implicit"
    hyena_order: int = 2
    filter_order: int = 64
    filter_emb_dim: int = 3
    filter_sin_freq: float = 1.0
    filter_num_inner_mlps: int = 2
    filter_use_bias: bool = True
    train_pos_emb: bool = True
    modulate: bool = True
    modulation_shift: float = 0.0
    modulation_fast_decay_pct: float = 0.3
    modulation_slow_decay_pct: float = 1.5
    modulation_target: float = 1e-2
    short_filter_order: int = 3
    hyena_num_heads: int = 1
    hyena_inner_factor: int = 1
    hyena_dropout: float = 0.0

    ssm_state_size: int = 64
    h3_head_dim: int = 1

    modal_state_size: int = 16

    attn_layer_idx: list[int] | None = None
    num_attention_heads: int = 12
    rotary_emb_dim: int = 0
    rotary_emb_base: float = 10000.0
    attention_dropout: float = 0.0

    long_conv_impl: str = "auto"
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size if _is_int(self.hidden_size) else self.hidden_size
        if self.attn_layer_idx is not None:
            if not isinstance(self.attn_layer_idx, (list, tuple)) or not all(map(_is_int, self.attn_layer_idx)):
                raise ValueError(
                    f"HyenaConfig.attn_layer_idx must be a list of layer indices, got {self.attn_layer_idx!r}"
                )
            self.attn_layer_idx = sorted(int(i) for i in self.attn_layer_idx)
        super().__post_init__(**kwargs)
        self.validate_hyena()

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> HyenaConfig:
        """As transformers', but a saved config must state every field that changes what the weights compute: a
        default in their place would silently give a different model (hyena-hf always saves them)."""
        given = set(config_dict) | set(kwargs)
        given |= {cls.attribute_map[k] for k in given if k in cls.attribute_map}
        missing = [name for name in FUNCTION_FIELDS if name not in given]
        if missing:
            raise ValueError(
                f"Hyena config is missing {', '.join(missing)}: these fields change what the weights "
                "compute, so no default can stand in for them; add the values the model was trained with"
            )
        return super().from_dict(config_dict, **kwargs)

    # -- derived values -------------------------------------------------------------------------------------------
    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding matrix: ``vocab_size`` rounded up to ``pad_vocab_size_multiple``."""
        m = self.pad_vocab_size_multiple
        return ((self.vocab_size + m - 1) // m) * m

    @property
    def layer_types(self) -> list[str]:
        """Per-layer cache kind for v5 ``generate``: attention layers keep a KV cache, the others a conv state."""
        attn = set(self.attn_layer_idx or ())
        return ["full_attention" if i in attn else "linear_attention" for i in range(self.num_hidden_layers)]

    @property
    def mixer_types(self) -> list[str]:
        attn, kind = set(self.attn_layer_idx or ()), self.filter_type  # config attribute reads are not free
        return ["attention" if i in attn else kind for i in range(self.num_hidden_layers)]

    @property
    def has_length_limit(self) -> bool:
        """Implicit filters exist only for positions < max_position_embeddings; H3/modal/attention have no limit."""
        return self.filter_type == "implicit" and len(set(self.attn_layer_idx or ())) < self.num_hidden_layers

    # -- validation -----------------------------------------------------------------------------------------------
    def validate_hyena(self) -> None:
        """Every field's type and range, with a ValueError naming the field (and its original alias)."""
        aliases = {v: k for k, v in self.attribute_map.items()}

        def fail(name: str, expected: str) -> None:
            alias = f" ({aliases[name]})" if name in aliases else ""
            raise ValueError(f"HyenaConfig.{name}{alias} must be {expected}, got {getattr(self, name)!r}")

        for name, (low, high) in INT_BOUNDS.items():
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= high:
                fail(name, f"an integer in [{low}, {high}]")
        for name, (low, high, low_open) in FLOAT_BOUNDS.items():
            value = getattr(self, name)
            if not _is_real(value) or not low <= value <= high or (low_open and value == low):
                fail(name, f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}]")
        for name in BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                fail(name, "true or false")
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                fail(name, f"one of {choices}")
        if self.filter_emb_dim % 2 == 0:
            fail("filter_emb_dim", "odd (time plus Re/Im pairs)")
        if self.hyena_num_heads != 1 or self.hyena_inner_factor != 1:
            raise ValueError(
                "HyenaConfig.hyena_num_heads and hyena_inner_factor must be 1 (the original operator only "
                f"runs with 1), got {self.hyena_num_heads} and {self.hyena_inner_factor}"
            )
        if self.h3_head_dim != 1:
            fail("h3_head_dim", "1 (as in every released H3 model)")
        if self.filter_type == "h3" and self.ssm_state_size % 2:
            fail("ssm_state_size", "even for H3")
        for i in self.attn_layer_idx or ():
            if not 0 <= i < self.num_hidden_layers:
                raise ValueError(
                    f"HyenaConfig.attn_layer_idx entry {i} is out of range for "
                    f"num_hidden_layers={self.num_hidden_layers}"
                )
        if self.attn_layer_idx:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"HyenaConfig.hidden_size ({self.hidden_size}) must be divisible by "
                    f"num_attention_heads ({self.num_attention_heads})"
                )
            head_dim = self.hidden_size // self.num_attention_heads
            if not _is_int(self.rotary_emb_dim) or not 0 <= self.rotary_emb_dim <= head_dim or self.rotary_emb_dim % 2:
                fail("rotary_emb_dim", f"an even number in [0, head_dim={head_dim}]")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Sizes bounded by what anyone could mean (the largest released models are far inside): a typo such as 10**6 layers
# fails here instead of building for minutes.
INT_BOUNDS = {
    "vocab_size": (1, 1 << 22),
    "hidden_size": (1, 1 << 16),
    "num_hidden_layers": (1, 1024),
    "intermediate_size": (1, 1 << 18),
    "max_position_embeddings": (1, 1 << 26),
    "pad_vocab_size_multiple": (1, 1 << 16),
    "filter_order": (1, 1 << 14),
    "filter_emb_dim": (3, 1023),
    "filter_num_inner_mlps": (0, 64),
    "short_filter_order": (1, 1024),
    "hyena_order": (2, 16),
    "ssm_state_size": (1, 4096),
    "modal_state_size": (1, 4096),
    "num_attention_heads": (1, 1 << 12),
    "h3_head_dim": (1, 1 << 12),
    "hyena_num_heads": (1, 1 << 12),
    "hyena_inner_factor": (1, 64),
}
# (low, high, low excluded)
FLOAT_BOUNDS = {
    "layer_norm_epsilon": (0.0, 1.0, True),
    "initializer_range": (0.0, 1e3, False),
    "filter_sin_freq": (-1e6, 1e6, False),
    "modulation_shift": (-1e6, 1e6, False),
    "modulation_fast_decay_pct": (0.0, 1e6, True),
    "modulation_slow_decay_pct": (0.0, 1e6, True),
    "modulation_target": (0.0, 1e6, True),
    "rotary_emb_base": (0.0, 1e12, True),
    "embd_pdrop": (0.0, 0.999, False),
    "resid_pdrop": (0.0, 0.999, False),
    "attention_dropout": (0.0, 0.999, False),
    "hyena_dropout": (0.0, 0.999, False),
}
BOOL_FIELDS = (
    "residual_in_fp32",
    "rescale_prenorm_residual",
    "tie_word_embeddings",
    "filter_use_bias",
    "train_pos_emb",
    "modulate",
    "use_cache",
)
CHOICES = {"filter_type": FILTER_TYPES, "long_conv_impl": LONG_CONV_IMPLS, "hidden_act": ("gelu_pytorch_tanh",)}
# What a saved config must state (see HyenaConfig.from_dict).
FUNCTION_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "max_position_embeddings",
    "pad_vocab_size_multiple",
    "layer_norm_epsilon",
    "residual_in_fp32",
    "tie_word_embeddings",
    "filter_type",
    "hyena_order",
    "filter_order",
    "filter_emb_dim",
    "filter_num_inner_mlps",
    "filter_use_bias",
    "train_pos_emb",
    "modulate",
    "modulation_shift",
    "short_filter_order",
    "ssm_state_size",
    "modal_state_size",
    "attn_layer_idx",
    "num_attention_heads",
    "rotary_emb_dim",
    "rotary_emb_base",
)

__all__ = ["HyenaConfig"]
