"""What transformers' ``generate`` asks of a Hyena language model beyond ``forward``: a
:class:`~hyena_hf.cache_hyena.HyenaCache` in place of the default ``DynamicCache`` (a caller's ``DynamicCache`` takes
this model's layers before ``generate`` reads its length), a clear error for a cache of another kind, a prompt of at
least one token, and a length the implicit filters reach."""

from __future__ import annotations

from transformers.generation import GenerationMixin

from . import model_inputs
from .cache_hyena import HyenaCache


class HyenaGenerationMixin(GenerationMixin):
    """transformers' GenerationMixin with the hooks above; HyenaForCausalLM takes it in its place."""

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # a HyenaCache (conv / SSM states + attention KV) is built below, not generate's DynamicCache

    def _prepare_cache_for_generation(
        self, generation_config, model_kwargs: dict, generation_mode, batch_size: int, max_cache_length: int
    ):
        # A caller's DynamicCache takes this model's layers, and a cache of another kind or model is refused, before
        # generate asks it for its length; a length past the implicit filters is refused before the prefill
        # (max_cache_length + 1: the prompt, ids or embeddings, and new tokens).
        model_inputs.check_cache(model_kwargs.get("past_key_values"), self.config)
        model_inputs.check_length(self.config, max_cache_length + 1, generating=True)
        # transformers' part: a caller's cache is marked as theirs, a cache_implementation is ignored with a warning
        super()._prepare_cache_for_generation(
            generation_config, model_kwargs, generation_mode, batch_size, max_cache_length
        )
        if model_kwargs.get("past_key_values") is None and generation_config.use_cache is not False:
            # built before the prefill, as generate builds its DynamicCache: a chunked prefill (prefill_chunk_size)
            # feeds the prompt through the cache chunk by chunk
            model_kwargs["past_key_values"] = HyenaCache(self.config)

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, inputs_embeds=None, **kwargs):
        """transformers' own preparation (it slices what the cache has seen, takes ``inputs_embeds`` for the prefill and
        forwards every other keyword), after refusing an empty prompt."""
        model_inputs.check_prompt(input_ids, inputs_embeds, past_key_values)
        return super().prepare_inputs_for_generation(
            input_ids, past_key_values=past_key_values, inputs_embeds=inputs_embeds, **kwargs
        )
