"""Recurrent decoding of the long-convolution mixers after a prefill: one new token at a time, or many at once.

The full forward computes every position at once by FFT; decoding continues from a cache (see
:mod:`hyena_hf.cache_hyena`) filled by that forward: the prefill helpers below store what the steps read (the short
filter's window, each convolution's inputs or the recurrent states and poles; the exact steps evaluate the reversed
filters themselves), and the step functions produce the mixer's output for new tokens exactly as the full forward
would: a token at a time by the recurrence (or the sum over the history), or, for a chunk of new tokens (a second
turn, a chunked prefill), by convolutions over the chunk (and the history) plus the carried state's response. The
mixers call them; they never import the model.
"""

from __future__ import annotations

import torch

from .cache_hyena import H3State, HyenaConvState, ModalState
from .diagonal_recurrence import decayed_sum, modal_impulse_response, pole_powers
from .ops import compute_dtype, convolution_tail, long_conv
from .ops_cpu import (
    causal_short_conv,
    convolution_at_last_position,
    linear_channels_first,
    short_conv_last_output,
)

# From this many new tokens at once (a chunked prefill, a second turn of a conversation), plus one per
# EXACT_CHUNK_TOKENS_PER_CONTEXT tokens of context, exact decoding convolves each order step's whole history by FFT
# and keeps the last outputs, instead of one O(T d) sum per token in a Python loop (1K tokens after 4K of context,
# width 256, 4 layers: 2.3 s token by token, 14x the full forward of all 5K tokens; 0.09 s by FFT). Measured
# crossover on that model, 2 threads: ~8 new tokens after 512 of context, ~11 after 4K, ~19 after 16K. (Against
# relaxed steps, which serve long histories, the crossover is RELAXED_CHUNK_CONTEXT_PER_TOKEN's.)
EXACT_CHUNK_MIN_TOKENS = 8
EXACT_CHUNK_TOKENS_PER_CONTEXT = 1536
# Exact decoding of single tokens is relaxed (online) FFT convolution, instead of the sum over the whole history, once
# the history holds this many elements (B d T per order step): a window of pending outputs gets each past input's
# contribution in power-of-two blocks (after the j-th new token, the last 2^k tokens' contribution to the next 2^k
# outputs, for the largest 2^k dividing j), and the history before the window in one FFT when it opens: O(d log^2 T)
# per token amortised instead of O(T d). The sum's cost grows with B d T while a relaxed step costs a few small ops
# more: on CPU (benchmarks/bench_relaxed_decoding.py, 2 threads) the two break even between 512 and 1024 tokens of
# context at d = 256, batch 1 (2^17 - 2^18 elements), at ~256 for d = 768, batch 1, and below 256 for d = 256,
# batch 8 or d = 768, batch 4; at 32K tokens the relaxed steps are 3.6-8.7x faster (the sum's time varies 2x from
# run to run there). On a GPU the sum is one bandwidth-bound reduction while a relaxed step launches about ten more
# small kernels per order step (~50 us, the time an H100 reads ~150 MB): not measured there yet, so it starts at
# 2^24 elements (64K tokens at d = 256, batch 1).
EXACT_RELAXED_MIN_HISTORY = {"cpu": 1 << 18}
EXACT_RELAXED_MIN_HISTORY_ELSEWHERE = 1 << 24
# A window covers this share of the context (and at least RELAXED_MIN_WINDOW tokens): opening one costs an FFT over
# the history, spread over the window's tokens; its pending outputs take (B, d, W) per order step.
RELAXED_WINDOW_DIVISOR = 4
RELAXED_MIN_WINDOW = 64
# Where relaxed steps serve, a chunk of new tokens runs through them (one call: the projections batched, a relaxed
# step per token) below one new token per this many tokens of context; from there the chunk path (an FFT over the
# whole history, then a new window) is faster. Measured crossovers (d = 256, 4 layers, batch 1, a window open):
# ~16 new tokens after 1K of context, ~96 after 4K, ~800 after 32K.
RELAXED_CHUNK_CONTEXT_PER_TOKEN = 48
# Modal decoding: from this many new tokens the recurrence runs as a convolution within the chunk plus the carried
# state's response (a cost independent of the context), instead of a Python loop of one recurrence step per token
# (width 256, 4 layers, N = 16: the crossover at ~56 new tokens; 1K tokens after 4K of context 0.32 -> 0.07 s).
MODAL_CHUNK_MIN_TOKENS = 56
# The same for H3's two SSMs (d_state 64: the crossover at ~70 new tokens; 1K tokens after 4K 0.41 -> 0.09 s).
H3_CHUNK_MIN_TOKENS = 72


def hyena_step_parameters(mixer, h: torch.Tensor | None, skip: torch.Tensor | None, state) -> tuple:
    """What Hyena decoding reads from the weights: the reversed filters ``h (order-1, d, L)`` and the skips (exact
    cache; a prefill passes ``h`` None: the first decoding step computes the filters, so a forward that never
    decodes holds no copy of them) or, per order step, the poles and residues (d, N) (modal; channels laid out as
    (d, order-1))."""
    if isinstance(state, ModalState):
        poles, residues = mixer.filter.complex_poles_residues()
        shape = (mixer.config.hidden_size, mixer.config.hyena_order - 1, -1)
        return poles.view(shape).unbind(1), residues.view(shape).unbind(1), skip
    return None if h is None else h.flip(-1), skip


def hyena_prefill_step(state, step: int, u: torch.Tensor) -> None:
    """Record the input ``u (B, d, T)`` of order step ``step``, in the compute dtype: its history (exact; ``u`` is
    kept, not copied: the caller never writes to it again) or the recurrent state it leaves, s_T = sum_t p^(T-1-t)
    u_t (modal)."""
    u = u.to(compute_dtype(u.dtype))
    if isinstance(state, ModalState):
        state.update_recurrent_state(decayed_sum(u, state.step_params[0][step]), state_idx=step)
    else:
        state.append(step, u)


def prefill_recorder(mixer, state):
    """None without a state; else what the CPU inference engine calls after a prefill of ``mixer`` (see
    :func:`hyena_hf.ops_cpu.hyena_mixer_in_channel_blocks`) to fill ``state`` as the module path does: the short
    filter's window, the step parameters and each order step's input."""
    if state is None:
        return None

    def record(last_inputs, skip, conv_inputs) -> None:
        if last_inputs is not None:
            state.update_conv_state(last_inputs, conv_kernel_size=mixer.config.short_filter_order - 1)
        state.step_params = hyena_step_parameters(mixer, None, skip, state)
        for step, u in enumerate(conv_inputs):
            hyena_prefill_step(state, step, u)

    return record


def hyena_step(
    mixer, hidden_states: torch.Tensor, state: HyenaConvState, padding_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Hyena decoding of new tokens ``hidden_states (B, n, d)`` -> ``(B, n, d)``: exact (the causal convolution sum
    over the stored history, O(T d) per token; from EXACT_RELAXED_MIN_HISTORY on, relaxed FFT convolution,
    O(d log^2 T) amortised) or modal (the recurrence, O(d N)); a chunk of many new tokens by :func:`_chunk`.
    Padded new tokens (``padding_mask (B, 1, n)`` zero) enter as the full forward lets them: zero inputs and zero
    pre-gates."""
    config = mixer.config
    u_all = mixer.in_proj(hidden_states).transpose(1, 2)
    if padding_mask is not None:
        u_all = u_all * padding_mask
    modal = isinstance(state, ModalState)
    if modal:
        poles, residues, skip = state.step_params
        if u_all.shape[-1] >= MODAL_CHUNK_MIN_TOKENS:
            return mixer.out_proj(_chunk(mixer, u_all, state, padding_mask, skip).to(hidden_states.dtype))
    else:
        h_rev, skip, by_chunk = _exact_plan(mixer, state, u_all)
        if by_chunk:
            return mixer.out_proj(_chunk(mixer, u_all, state, padding_mask, skip, h_rev).to(hidden_states.dtype))
    outputs = []
    for t in range(u_all.shape[-1]):
        u_t = u_all[..., t : t + 1]
        window = state.update_conv_state(u_t) if config.short_filter_order > 1 else u_t  # (B, C, k)
        uc = short_conv_last_output(mixer.short_filter, window)
        *xs, v = uc.split(config.hidden_size, dim=1)
        dtype = compute_dtype(v.dtype)
        v = v.to(dtype)
        keep = None if padding_mask is None else padding_mask[..., t].to(dtype)  # (B, 1)
        for o, x_i in enumerate(reversed(xs[1:])):
            u = v * (x_i.to(dtype) if keep is None else x_i.to(dtype) * keep)
            if modal:  # s <- p s + u ; y = Re sum_n R_n s_n
                s = state.update_recurrent_state(poles[o] * state.recurrent_states[o] + u[..., None], state_idx=o)
                v = (residues[o] * s).sum(-1).real.to(dtype)
            elif state.window_start is not None:
                v = _relaxed_exact_step(state, o, u, h_rev[o])
            else:  # exact causal convolution sum over the whole history
                history = state.append(o, u[..., None])
                v = convolution_at_last_position(history, h_rev[o, :, h_rev.shape[-1] - history.shape[-1] :].to(dtype))
            if skip is not None:
                v = v + skip[o].to(dtype) * u
        outputs.append((v * xs[0].to(dtype)).to(hidden_states.dtype))
    return mixer.out_proj(torch.stack(outputs, dim=1))


def _exact_plan(mixer, state: HyenaConvState, u_all: torch.Tensor) -> tuple:
    """How exact decoding serves the new tokens ``u_all (B, C, n)``: returns the step parameters (filters covering
    them) and whether the chunk path does (else token steps: relaxed, in a window opened here if needed, where the
    history holds EXACT_RELAXED_MIN_HISTORY elements or a window is open; else sums over the history)."""
    context, n = state.lengths[0], u_all.shape[-1]
    h_rev, skip = _exact_filters(mixer, state, context + n)
    relaxed_from = EXACT_RELAXED_MIN_HISTORY.get(u_all.device.type, EXACT_RELAXED_MIN_HISTORY_ELSEWHERE)
    # not under torch.compile: the relaxed blocks change shape every step, a graph each
    relaxed = not torch.compiler.is_compiling() and (
        u_all.shape[0] * mixer.config.hidden_size * context >= relaxed_from or state.window_start is not None
    )
    chunk_from = EXACT_CHUNK_MIN_TOKENS + context // EXACT_CHUNK_TOKENS_PER_CONTEXT
    if relaxed:
        chunk_from = max(chunk_from, context // RELAXED_CHUNK_CONTEXT_PER_TOKEN)
    if n >= chunk_from or not relaxed:
        state.close_window()
        return h_rev, skip, n >= chunk_from
    return *_relaxed_window(mixer, state, n), False


def _exact_filters(mixer, state: HyenaConvState, taps: int) -> tuple:
    """The step parameters (reversed filters, skips), the filters evaluated to at least ``taps`` taps: at the first
    step, then whenever the text outgrows them, twice the text (at most max_position_embeddings)."""
    filter_length = 0 if state.step_params[0] is None else state.step_params[0].shape[-1]
    if filter_length < taps:
        length = min(max(taps, 2 * state.lengths[0]), mixer.config.max_position_embeddings)
        state.step_params = hyena_step_parameters(mixer, *mixer.long_filters(length), state)
    return state.step_params


def _relaxed_window(mixer, state: HyenaConvState, n: int) -> tuple:
    """Opens a relaxed-decoding window (see EXACT_RELAXED_MIN_HISTORY) where the ``n`` new tokens do not fit in the
    open one: each order step's pending outputs start as its whole history's contribution to the window's
    positions. Returns the step parameters, the filters covering the window."""
    context = state.lengths[0]
    if state.window_start is not None and context + n <= state.window_start + state.pending[0].shape[-1]:
        return state.step_params
    room = mixer.config.max_position_embeddings - context  # >= n: generate and forward check the length first
    width = min(max(context // RELAXED_WINDOW_DIVISOR, RELAXED_MIN_WINDOW, n), room)
    h_rev, skip = _exact_filters(mixer, state, context + width)
    taps = h_rev[..., h_rev.shape[-1] - context - width :].flip(-1)  # h[0 : context + width], (order-1, d, .)
    state.pending = [convolution_tail(state.history_view(o), taps[o], width) for o in range(len(state.pending))]
    state.window_start = context
    return h_rev, skip


def _relaxed_exact_step(state: HyenaConvState, o: int, u: torch.Tensor, h_rev: torch.Tensor) -> torch.Tensor:
    """Order step ``o`` of exact decoding for one new input ``u (B, d)`` inside an open window -> ``(B, d)``: the
    window's pending output plus h[0] u; then the last 2^k inputs' contribution (2^k the largest power of two that
    divides the tokens taken in the window) is added to the next 2^k pending outputs. Every earlier input reaches
    every later output exactly once (the blocks tile the pairs), before it is read. ``h_rev (d, >= T)`` reversed."""
    j = state.lengths[o] - state.window_start
    history, pending = state.append(o, u[..., None]), state.pending[o]
    v = pending[..., j] + h_rev[:, -1].to(u.dtype) * u
    size = (j + 1) & -(j + 1)
    count = min(size, pending.shape[-1] - j - 1)  # the block's outputs inside the window
    if count > 0:
        taps = h_rev[:, h_rev.shape[-1] - size - count :].flip(-1)  # h[0 : size + count]
        pending[..., j + 1 : j + 1 + count] += convolution_tail(history[..., -size:], taps, count)
    return v


def _chunk(mixer, u_all: torch.Tensor, state, padding_mask, skip, h_rev: torch.Tensor | None = None) -> torch.Tensor:
    """Decoding of n new tokens at once, from their in-projection ``u_all (B, (order+1) d, n)`` to the gated output
    ``(B, n, d)`` before out_proj: the short filter over the stored window and the chunk, then each order step
    (:func:`_exact_chunk_step` with the reversed filters ``h_rev (order-1, d, >= T + n)``, or
    :func:`_modal_chunk_step`): the values the token-by-token steps compute. ``padding_mask (B, 1, n)`` or None."""
    config, n = mixer.config, u_all.shape[-1]
    window = state.update_conv_state(u_all) if config.short_filter_order > 1 else u_all  # (B, C, k - 1 + n)
    *xs, v = causal_short_conv(mixer.short_filter, window)[..., -n:].split(config.hidden_size, dim=1)
    dtype = compute_dtype(v.dtype)
    v = v.to(dtype)
    keep = None if padding_mask is None else padding_mask.to(dtype)
    for o, x_i in enumerate(reversed(xs[1:])):
        u = v * (x_i.to(dtype) if keep is None else x_i.to(dtype) * keep)
        skip_o = None if skip is None else skip[o]
        if h_rev is None:
            v = _modal_chunk_step(state, o, u, skip_o, config.long_conv_impl)
        else:
            v = _exact_chunk_step(state, o, u, h_rev[o], skip_o, config.long_conv_impl)
    return (v * xs[0].to(dtype)).transpose(1, 2)


def _exact_chunk_step(state: HyenaConvState, o: int, u: torch.Tensor, h_rev, skip, impl: str) -> torch.Tensor:
    """Order step ``o`` of exact decoding for the inputs ``u (B, d, n)``: appended to its history ``(B, d, T + n)``,
    which is convolved whole by FFT with the filter (``h_rev (d, >= T + n)`` reversed); the last n outputs."""
    n, history = u.shape[-1], state.append(o, u)
    h = h_rev[:, h_rev.shape[-1] - history.shape[-1] :].flip(-1).to(u.dtype)
    return long_conv(history, h, skip, impl=impl)[..., -n:]


def _modal_chunk_step(state: ModalState, o: int, u: torch.Tensor, skip, impl: str) -> torch.Tensor:
    """Order step ``o`` of modal decoding for the inputs ``u (B, d, n)``: the recurrence s_t = p s_(t-1) + u_t,
    y_t = Re sum R s_t over the chunk by :func:`_diagonal_chunk`, from and into the state ``(B, d, N)``."""
    poles, residues, _ = state.step_params
    y, after = _diagonal_chunk(u, poles[o], 1.0, residues[o], state.recurrent_states[o], skip, impl)
    state.update_recurrent_state(after, state_idx=o)
    return y


def _diagonal_chunk(u: torch.Tensor, p: torch.Tensor, b, c, s: torch.Tensor, skip, impl: str):
    """The diagonal recurrence s_t = p s_(t-1) + b u_t, y_t = Re sum c s_t (+ skip u_t) over the inputs ``u (B, C, n)``
    at once, from the state ``s (B, C, N)`` (``p (C, N)``; ``b``, ``c`` broadcast to it): the chunk convolved with the
    impulse response Re sum c b p^k, plus the carried state's response Re sum c p^(t+1) s. Returns y ``(B, C, n)``
    and the state after the chunk, p^n s + b sum_t p^(n-1-t) u_t."""
    bsz, n = u.shape[0], u.shape[-1]
    y = long_conv(u, modal_impulse_response(p, c * b, n).to(u.dtype), skip, impl=impl)
    # the carried response: the impulse response of residues c p s, one channel per (row, channel)
    carried = modal_impulse_response(p.expand(bsz, *p.shape).flatten(0, 1), (c * p * s).flatten(0, 1), n)
    return y + carried.view_as(y).to(y.dtype), pole_powers(p, n) * s + b * decayed_sum(u, p)


def h3_prefill(mixer, k: torch.Tensor, kv: torch.Tensor, padding_mask: torch.Tensor | None, state: H3State) -> None:
    """H3 state after the prompt (``k, kv: (B, d, T)``): the last d_state keys for the shift SSM, and
    sum_t dA^(T-1-t) dC' kv_t (what the recurrence reaches) for the diagonal SSM."""
    n = mixer.config.ssm_state_size
    dtype = compute_dtype(k.dtype)
    k = k.to(dtype) if padding_mask is None else k.to(dtype) * padding_mask.to(dtype)
    kv = kv if padding_mask is None else kv * padding_mask.to(kv.dtype)
    state.update_conv_state(k, conv_kernel_size=n)  # the last d_state keys (zeros before the start)
    dA, dC = mixer.diag_ssm_discrete()
    state.update_recurrent_state(dC.unsqueeze(0) * decayed_sum(kv, dA))
    state.step_params = (mixer.shift_kernel(n).flip(-1), dA, dC)


def h3_step(mixer, hidden_states: torch.Tensor, state: H3State, padding_mask: torch.Tensor | None = None):
    """H3's recurrence on new tokens ``hidden_states (B, n, d)`` -> ``(B, n, d)``: shift SSM as an FIR window,
    diagonal SSM as a complex state; O(d * d_state) per token (a chunk of many new tokens by :func:`_h3_chunk`).
    Padded new tokens (``padding_mask (B, 1, n)`` zero) enter as zero keys and zero SSM inputs, as in the full
    forward."""
    shift_kernel, dA, dC = state.step_params
    if hidden_states.shape[1] >= H3_CHUNK_MIN_TOKENS:
        return mixer.out_proj(_h3_chunk(mixer, hidden_states, state, padding_mask).to(hidden_states.dtype))
    outputs = []
    for t in range(hidden_states.shape[1]):
        x = hidden_states[:, t]
        q, k, v = mixer.q_proj(x), mixer.k_proj(x), mixer.v_proj(x)
        dtype = compute_dtype(k.dtype)
        k = k.to(dtype)
        keep = None if padding_mask is None else padding_mask[:, 0, t, None].to(dtype)  # (B, 1)
        if keep is not None:
            k = k * keep
        window = state.update_conv_state(k[..., None])[..., 1:]  # the last d_state keys
        kv = ((window * shift_kernel).sum(-1) + mixer.shift_D.to(dtype) * k) * v.to(dtype)
        if keep is not None:
            kv = kv * keep
        ssm = state.update_recurrent_state(dA * state.ssm + dC * kv[..., None])
        y = 2 * ssm.sum(-1).real + mixer.D.to(dtype) * kv
        outputs.append((y * q.to(dtype)).to(hidden_states.dtype))
    return mixer.out_proj(torch.stack(outputs, dim=1))


def _h3_chunk(mixer, hidden_states: torch.Tensor, state: H3State, padding_mask) -> torch.Tensor:
    """H3 decoding of n new tokens ``hidden_states (B, n, d)`` at once -> ``(B, n, d)`` before out_proj: the shift
    SSM over the stored keys and the chunk's, then the diagonal SSM by :func:`_diagonal_chunk`."""
    shift_kernel, dA, dC = state.step_params
    impl, n = mixer.config.long_conv_impl, hidden_states.shape[1]
    q, k, v = (linear_channels_first(proj, hidden_states) for proj in (mixer.q_proj, mixer.k_proj, mixer.v_proj))
    dtype = compute_dtype(k.dtype)
    keep = None if padding_mask is None else padding_mask.to(dtype)
    k = k.to(dtype) if keep is None else k.to(dtype) * keep
    keys = state.update_conv_state(k)[..., 1:]  # the last d_state - 1 stored keys, then the chunk's
    kv = long_conv(keys, shift_kernel.flip(-1), mixer.shift_D.to(dtype), impl=impl)[..., -n:] * v.to(dtype)
    if keep is not None:
        kv = kv * keep
    # the diagonal SSM: s_t = dA s_(t-1) + dC kv_t, y_t = 2 Re sum s_t + D kv_t
    y, after = _diagonal_chunk(kv, dA, dC, 2.0, state.ssm, mixer.D.to(dtype), impl)
    state.update_recurrent_state(after)
    return (y * q.to(dtype)).transpose(1, 2)
