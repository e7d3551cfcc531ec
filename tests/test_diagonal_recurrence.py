"""The diagonal recurrences behind the modal filter and H3's SSM, against references computed independently in
float64: the impulse response Re sum_n R_n p_n^t and the state sum_t p^(T-1-t) u_t, by the recurrence itself at
short lengths and by the full (C, N, L) matrix of powers at long ones; float32 accuracy; gradients."""

import pytest
import torch

from hyena_hf.diagonal_recurrence import decayed_sum, modal_impulse_response


def poles_and_residues(channels: int, modes: int, slowest: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    magnitude = slowest + (1 - slowest) * 0.999 * torch.rand(channels, modes, generator=generator, dtype=torch.float64)
    angle = 3.1 * torch.rand(channels, modes, generator=generator, dtype=torch.float64)
    residues = torch.randn(channels, modes, generator=generator, dtype=torch.complex128)
    return torch.polar(magnitude, angle), residues


def all_powers(poles: torch.Tensor, exponents: torch.Tensor) -> torch.Tensor:
    """(C, N, L) p^e in float64, straight from the polar form."""
    return torch.polar(poles.abs().unsqueeze(-1) ** exponents, poles.angle().unsqueeze(-1) * exponents)


@pytest.mark.parametrize("seqlen", [0, 1, 2, 3, 16, 17, 100, 1000])
def test_impulse_response_and_state_equal_the_recurrence(seqlen):
    poles, residues = poles_and_residues(5, 4, 0.5, seed=seqlen)
    u = torch.randn(2, 5, seqlen, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    power, h, state = torch.ones_like(poles), torch.zeros(5, seqlen, dtype=torch.float64), torch.zeros(2, 5, 4)
    state = state.to(torch.complex128)
    for t in range(seqlen):  # h[t] = Re sum R p^t; s <- p s + u_t
        h[:, t] = (residues * power).sum(-1).real
        power = power * poles
        state = poles * state + u[..., t, None]
    assert modal_impulse_response(poles, residues, seqlen).shape == (5, seqlen)
    assert torch.allclose(modal_impulse_response(poles, residues, seqlen), h, rtol=1e-12, atol=1e-12)
    assert torch.allclose(decayed_sum(u, poles), state, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seqlen", [4099, 65536])
def test_float32_accuracy_at_long_lengths(seqlen):
    """Slow poles (|p| up to 0.9999): float32 results within 1e-6 of the float64 truth, relative to the largest value
    (p^t through exp(t log p) in float32 alone is off by ~2e-4 at 64K)."""
    poles, residues = poles_and_residues(6, 8, 0.99, seed=seqlen)
    poles, residues = poles.to(torch.complex64).to(torch.complex128), residues.to(torch.complex64).to(torch.complex128)
    t = torch.arange(seqlen, dtype=torch.float64)
    h = torch.einsum("cn,cnl->cl", residues, all_powers(poles, t)).real
    u = torch.randn(1, 6, seqlen, generator=torch.Generator().manual_seed(2)).double()
    state = torch.einsum("bct,cnt->bcn", u.to(torch.complex128), all_powers(poles, t.flip(0)))
    h32 = modal_impulse_response(poles.to(torch.complex64), residues.to(torch.complex64), seqlen)
    state32 = decayed_sum(u.float(), poles.to(torch.complex64))
    assert h32.dtype == torch.float32 and state32.dtype == torch.complex64
    assert (h32.double() - h).abs().max() <= 1e-6 * h.abs().max()
    assert (state32.to(torch.complex128) - state).abs().max() <= 1e-6 * state.abs().max()


def test_gradients():
    poles, residues = poles_and_residues(3, 2, 0.5, seed=0)
    poles.requires_grad_(True)
    residues.requires_grad_(True)
    u = torch.randn(2, 3, 23, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, r: modal_impulse_response(p, r, 20), (poles, residues))
    assert torch.autograd.gradcheck(lambda x, p: torch.view_as_real(decayed_sum(x, p)), (u, poles))


def test_fast_poles_and_zero_residues_in_float32():
    """Fast poles (|p| from 0.05): most of their float32 powers underflow and are flushed to 0 (no denormals); the
    filter still equals the float64 truth within 1e-6 of its largest value. Zero residues (a zero-initialised SSM)
    give finite gradients for the poles and residues alike."""
    poles, residues = poles_and_residues(6, 8, 0.05, seed=3)
    poles, residues = poles.to(torch.complex64), residues.to(torch.complex64)
    seqlen = 4099
    t = torch.arange(seqlen, dtype=torch.float64)
    truth = torch.einsum("cn,cnl->cl", residues.to(torch.complex128), all_powers(poles.to(torch.complex128), t)).real
    h32 = modal_impulse_response(poles, residues, seqlen)
    assert (h32.double() - truth).abs().max() <= 1e-6 * truth.abs().max()
    residues[:3] = 0
    poles.requires_grad_(True)
    residues.requires_grad_(True)
    weights = torch.randn(6, seqlen, generator=torch.Generator().manual_seed(4))
    (modal_impulse_response(poles, residues, seqlen) * weights).sum().backward()
    assert torch.isfinite(poles.grad).all() and torch.isfinite(residues.grad).all()
    assert residues.grad[:3].abs().sum() > 0  # a zero residue still learns
