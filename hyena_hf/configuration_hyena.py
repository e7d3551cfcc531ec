"""Configuration of the Hyena family (Hyena / HyenaDNA / H3) as a transformers v5 config."""

from __future__ import annotations

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
            self.intermediate_size = 4 * self.hidden_size
        if self.attn_layer_idx is not None:
            self.attn_layer_idx = sorted(int(i) for i in self.attn_layer_idx)
        super().__post_init__(**kwargs)
        self.validate_hyena()

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
        attn = set(self.attn_layer_idx or ())
        return ["attention" if i in attn else self.filter_type for i in range(self.num_hidden_layers)]

    @property
    def has_length_limit(self) -> bool:
        """Implicit filters exist only for positions < max_position_embeddings; H3/modal/attention have no limit."""
        return self.filter_type == "implicit" and len(set(self.attn_layer_idx or ())) < self.num_hidden_layers

    # -- validation -----------------------------------------------------------------------------------------------
    def validate_hyena(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"HyenaConfig.{name} must be a positive integer, got {value!r}")

        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings",
                     "pad_vocab_size_multiple", "filter_order", "short_filter_order", "ssm_state_size",
                     "modal_state_size", "num_attention_heads", "filter_emb_dim", "h3_head_dim"):
            positive(name)
        if self.filter_type not in FILTER_TYPES:
            raise ValueError(f"HyenaConfig.filter_type must be one of {FILTER_TYPES}, got {self.filter_type!r}")
        if self.long_conv_impl not in LONG_CONV_IMPLS:
            raise ValueError(f"HyenaConfig.long_conv_impl must be one of {LONG_CONV_IMPLS}, got {self.long_conv_impl!r}")
        if not isinstance(self.hyena_order, int) or self.hyena_order < 2:
            raise ValueError(f"HyenaConfig.hyena_order (order) must be an integer >= 2, got {self.hyena_order!r}")
        if self.filter_emb_dim < 3 or self.filter_emb_dim % 2 == 0:
            raise ValueError(f"HyenaConfig.filter_emb_dim (emb_dim) must be odd and >= 3, got {self.filter_emb_dim}")
        if not isinstance(self.filter_num_inner_mlps, int) or self.filter_num_inner_mlps < 0:
            raise ValueError(f"HyenaConfig.filter_num_inner_mlps must be an integer >= 0, got {self.filter_num_inner_mlps!r}")
        if self.hyena_num_heads != 1 or self.hyena_inner_factor != 1:
            raise ValueError("HyenaConfig.hyena_num_heads and hyena_inner_factor must be 1 (the original operator only "
                             f"runs with 1), got {self.hyena_num_heads} and {self.hyena_inner_factor}")
        if self.h3_head_dim != 1:
            raise ValueError(f"HyenaConfig.h3_head_dim must be 1 (as in every released H3 model), got {self.h3_head_dim}")
        if self.filter_type == "h3" and self.ssm_state_size % 2:
            raise ValueError(f"HyenaConfig.ssm_state_size (d_state) must be even for H3, got {self.ssm_state_size}")
        for name in ("embd_pdrop", "resid_pdrop", "attention_dropout", "hyena_dropout"):
            value = getattr(self, name)
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"HyenaConfig.{name} must be in [0, 1), got {value!r}")
        if self.layer_norm_epsilon <= 0:
            raise ValueError(f"HyenaConfig.layer_norm_epsilon must be positive, got {self.layer_norm_epsilon}")
        for i in self.attn_layer_idx or ():
            if not 0 <= i < self.num_hidden_layers:
                raise ValueError(f"HyenaConfig.attn_layer_idx entry {i} is out of range for "
                                 f"num_hidden_layers={self.num_hidden_layers}")
        if self.attn_layer_idx:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"HyenaConfig.hidden_size ({self.hidden_size}) must be divisible by "
                                 f"num_attention_heads ({self.num_attention_heads})")
            head_dim = self.hidden_size // self.num_attention_heads
            if self.rotary_emb_dim < 0 or self.rotary_emb_dim > head_dim or self.rotary_emb_dim % 2:
                raise ValueError(f"HyenaConfig.rotary_emb_dim must be an even number in [0, head_dim={head_dim}], "
                                 f"got {self.rotary_emb_dim}")
        if self.hidden_act != "gelu_pytorch_tanh":
            raise ValueError(f"HyenaConfig.hidden_act must be 'gelu_pytorch_tanh' (the original MLP), got {self.hidden_act!r}")


__all__ = ["HyenaConfig"]
