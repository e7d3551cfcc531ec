"""Distillation of implicit Hyena filters into modal (pole/residue) filters: the tool that turns a trained Hyena
model into one that decodes by a constant-cost recurrence (the Laughing Hyena / StripedHyena form).

Fitting (per channel): poles from the shift invariance of the filter's Hankel matrix (Kung's / ERA method: SVD, keep
``2N`` singular directions, eigenvalues of the shift operator; a real filter's poles come in conjugate pairs, so one
of each pair is kept), residues by least squares, then optional Adam refinement of both. This module imports the
model (:class:`~hyena_hf.modeling_hyena.ModalFilter` is a model component); the model never imports it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .diagonal_recurrence import modal_impulse_response
from .modeling_hyena import HyenaOperator
from .thresholds import DISTILL_MAX_ERROR


def hankel_poles(h: torch.Tensor, state_size: int, rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Poles of (C, L) real filters by the Hankel/ERA method. Returns (C, state_size) poles, (C, k) singular values."""
    C, L = h.shape
    m = rows or min(L // 2, 256)
    m = max(m, 2 * state_size + 1)
    if m + 1 > L:
        raise ValueError(f"filter of length {L} is too short to fit {state_size} modes")
    cols = min(L - m + 1, 512)
    idx = torch.arange(m)[:, None] + torch.arange(cols)[None, :]
    hankel = h[:, idx]  # (C, m, cols)
    U, S, _ = torch.linalg.svd(hankel, full_matrices=False)
    order = min(2 * state_size, U.shape[-1])
    Uk = U[..., :order]
    shift = torch.linalg.lstsq(Uk[:, :-1], Uk[:, 1:]).solution  # (C, order, order)
    eig = torch.linalg.eigvals(shift)  # (C, order)
    # one pole per conjugate pair: prefer Im >= 0, then by magnitude
    key = eig.imag.clamp(min=-1e-9).sign() * 10 + eig.abs()
    chosen = torch.gather(eig, 1, key.argsort(dim=1, descending=True)[:, :state_size])
    if chosen.shape[1] < state_size:  # fewer singular directions than modes: pad with zero poles
        chosen = torch.cat([chosen, chosen.new_zeros(C, state_size - chosen.shape[1])], dim=1)
    magnitude = chosen.abs()
    chosen = torch.where(magnitude > 1.0, chosen / magnitude, chosen)  # keep the recurrence stable
    return chosen, S


def fit_residues(h: torch.Tensor, poles: torch.Tensor) -> torch.Tensor:
    """Least-squares complex residues ``(C, N)`` for fixed ``poles (C, N)`` and filters ``h (C, L)``:
    min || Re(V R) - h || with V the (L, N) Vandermonde matrix of each channel's poles."""
    C, L = h.shape
    t = torch.arange(L, dtype=poles.real.dtype, device=poles.device)
    vander = poles.unsqueeze(-1) ** t  # (C, N, L)
    A = torch.cat([vander.real, -vander.imag], dim=1).transpose(1, 2)  # (C, L, 2N)
    sol = torch.linalg.lstsq(A, h.unsqueeze(-1), driver="gelsd" if A.device.type == "cpu" else None).solution
    n = poles.shape[1]
    return torch.complex(sol[:, :n, 0], sol[:, n:, 0])


def refine(h: torch.Tensor, poles: torch.Tensor, residues: torch.Tensor, steps: int, lr: float = 1e-3):
    """Adam on (log|p|, arg p, R) to lower the L2 error to the filters ``h (C, L)`` further, from ``poles`` and
    ``residues (C, N)``; poles stay inside the unit circle. Returns the refined (poles, residues), each ``(C, N)``."""
    log_mag = poles.abs().clamp(min=1e-6).log().clone().requires_grad_(True)
    angle = poles.angle().clone().requires_grad_(True)
    res = torch.view_as_real(residues).clone().requires_grad_(True)
    opt = torch.optim.Adam([log_mag, angle, res], lr=lr)
    for _ in range(steps):
        p = torch.polar(log_mag.clamp(max=0.0).exp(), angle)
        loss = (modal_impulse_response(p, torch.view_as_complex(res), h.shape[-1]) - h).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return torch.polar(log_mag.clamp(max=0.0).exp(), angle), torch.view_as_complex(res).clone()


def fit_modal(
    h: torch.Tensor, state_size: int, refine_steps: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C, L) real filters -> (poles, residues, Hankel singular values), computed in float64."""
    h64 = h.detach().to(torch.float64)
    poles, singular_values = hankel_poles(h64, state_size)
    residues = fit_residues(h64, poles)
    if refine_steps:
        poles, residues = refine(h64, poles, residues, refine_steps)
    return poles, residues, singular_values


def relative_error(h: torch.Tensor, poles: torch.Tensor, residues: torch.Tensor) -> float:
    """``||modal(poles (C, N), residues (C, N)) - h|| / ||h||`` over all the filters ``h (C, L)``."""
    approx = modal_impulse_response(poles, residues, h.shape[-1])
    return ((approx - h.to(approx.dtype)).norm() / h.norm().clamp(min=1e-30)).item()


# A Hankel singular value below this fraction of the largest no longer shapes the filter (suggested state size).
SPECTRUM_FLOOR = 1e-3


class DistillationError(ValueError):
    """A layer's filters are fitted worse than the accepted error; the message names the layers."""


@dataclass
class DistillReport:
    state_size: int
    relative_l2_error: dict[int, float] = field(default_factory=dict)  # layer -> error over all its filters
    hankel_singular_values: dict[int, list[float]] = field(default_factory=dict)  # layer -> mean normalised spectrum
    suggested_state_size: dict[int, int] = field(default_factory=dict)  # layer -> smallest N with s[2N] < floor

    def _singular(self, layer: int, index: int) -> float:
        values = self.hankel_singular_values[layer]
        return values[min(index, len(values) - 1)]

    def table(self) -> str:
        """Per-layer markdown table: error, spectrum decay at N and 2N, suggested N."""
        n = self.state_size
        rows = ["| layer | relative L2 error | s[N] | s[2N] | suggested N |", "|---|---|---|---|---|"]
        rows += [
            f"| {layer} | {error:.3e} | {self._singular(layer, n):.1e} | {self._singular(layer, 2 * n):.1e} | "
            f"{self.suggested_state_size[layer]} |"
            for layer, error in self.relative_l2_error.items()
        ]
        return "\n".join(rows)

    def to_dict(self) -> dict:
        return {
            "state_size": self.state_size,
            "relative_l2_error": self.relative_l2_error,
            "suggested_state_size": self.suggested_state_size,
            "hankel_singular_values": self.hankel_singular_values,
        }

    def check(self, max_error: float) -> None:
        """Raise :class:`DistillationError` naming every layer whose error exceeds ``max_error``."""
        bad = {layer: error for layer, error in self.relative_l2_error.items() if error > max_error}
        if bad:
            worst = ", ".join(f"layer {layer} {error:.2f}" for layer, error in bad.items())
            suggested = max(self.suggested_state_size.values())
            raise DistillationError(
                f"state size {self.state_size} fits the filters too poorly ({worst} relative L2 "
                f"error > {max_error:g}); try --state-size {suggested}, or --force to keep it"
            )


def _suggested_state_size(spectrum: torch.Tensor) -> int:
    """Smallest N whose normalised Hankel singular value s[2N] is below :data:`SPECTRUM_FLOOR` (ERA needs 2N
    singular directions for N conjugate-pair modes)."""
    below = (spectrum < SPECTRUM_FLOOR).nonzero()
    k = int(below[0]) if len(below) else len(spectrum)
    return max(1, -(-k // 2))


def distill(
    model,
    state_size: int,
    refine_steps: int = 0,
    length: int | None = None,
    progress: bool = True,
    max_error: float = DISTILL_MAX_ERROR,
    force: bool = False,
):
    """Return ``(modal_model, report)``: a copy of ``model`` whose implicit Hyena filters are replaced by
    ``state_size``-mode modal filters fitted on the first ``length`` (default ``max_position_embeddings``) taps.

    With ``progress`` the per-layer report is printed. A layer whose relative L2 filter error exceeds ``max_error``
    raises :class:`DistillationError` unless ``force``."""
    config = model.config
    if config.filter_type != "implicit":
        raise ValueError(f"distill expects a model with filter_type='implicit', got {config.filter_type!r}")
    if state_size < 1:
        raise ValueError(f"state_size must be positive, got {state_size}")
    length = length or config.max_position_embeddings
    new_config = copy.deepcopy(config)
    new_config.filter_type = "modal"
    new_config.modal_state_size = state_size
    new_model = type(model)(new_config).to(model.device)
    report = DistillReport(state_size)
    fitted: dict[str, torch.Tensor] = {}
    layers = [(i, blk.mixer) for i, blk in enumerate(model.backbone.layers) if isinstance(blk.mixer, HyenaOperator)]
    for i, mixer in tqdm(layers, desc=f"distill N={state_size}", disable=not progress):
        with torch.no_grad():
            h = mixer.filter(length)  # (channels, L)
        poles, residues, singular = fit_modal(h, state_size, refine_steps)
        report.relative_l2_error[i] = relative_error(h.double(), poles, residues)
        spectrum = (singular / singular[:, :1].clamp(min=1e-30)).mean(0)
        report.hankel_singular_values[i] = spectrum[: 4 * state_size].tolist()
        report.suggested_state_size[i] = _suggested_state_size(spectrum)
        prefix = f"backbone.layers.{i}.mixer.filter."
        fitted[prefix + "poles"] = torch.view_as_real(poles).float()
        fitted[prefix + "residues"] = torch.view_as_real(residues).float()
        fitted[prefix + "D"] = mixer.filter.D.detach()
    if progress:
        print(report.table())
    if not force:
        report.check(max_error)
    state = {k: v for k, v in model.state_dict().items() if ".mixer.filter." not in k}
    state.update(fitted)
    missing, unexpected = new_model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"distilled state dict mismatch: missing {missing}, unexpected {unexpected}")
    new_model.tie_weights()
    return new_model.to(model.dtype).eval(), report
