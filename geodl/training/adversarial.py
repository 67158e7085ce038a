"""Adversarial training in the same Lightning adapter: a generator (any geodl model) and a
discriminator, trained by alternating steps with manual optimisation.

Why a subclass of :class:`~geodl.training.TaskModule`: the generator keeps its own loss terms
(masked MSE, gradient, NLL...), its optimiser and schedule from the ``train`` section, its
validation score and its checkpoint format; the adversarial term is added to its loss with a
weight, and the discriminator is trained beside it. Validation (``val/loss``) is the generator's
own loss, without the adversarial term, so that early stopping and the best checkpoint keep their
meaning.

Stabilisation (documented choices, each optional): spectral normalisation of the discriminator's
layers (:class:`~geodl.models.PatchDiscriminator` ``spectral_norm=True``; Miyato et al. 2018), the
R1 gradient penalty on real samples (``r1_weight``; Mescheder, Geiger & Nowozin 2018), Adam with
``beta1 = 0.5`` for the discriminator (Radford et al. 2016), and the non-saturating or hinge losses
of :func:`geodl.losses.adversarial_generator_loss`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from geodl.config import Section
from geodl.losses import adversarial_discriminator_loss, adversarial_generator_loss
from geodl.training.module import LossFn, TaskModule, TrainingDiverged
from geodl.training.spec import TrainSection

__all__ = [
    "AdversarialSection",
    "AdversarialTaskModule",
    "FieldsFn",
    "generator_module",
    "r1_penalty",
]


class AdversarialSection(Section):
    """Adversarial refinement of a learned model (the ``adversarial`` section of a method):
    a discriminator judges the model's output against the truth, and ``weight`` times its
    generator loss joins the model's own loss. ``weight: 0`` (the default) trains without it.
    ``on: fields``: a patch discriminator (:class:`~geodl.models.PatchDiscriminator`, ``width``
    channels, ``n_layers`` halvings) sees the fields; ``on: spectra``: a
    :class:`~geodl.models.SpectrumDiscriminator` (an MLP of ``width`` units) sees only their
    isotropic power spectra in ``spectrum_bins`` annuli above ``spectrum_min``."""

    weight: float = Field(0.0, ge=0, description="weight of the adversarial term (0: off)")
    kind: Literal["non_saturating", "hinge"] = "non_saturating"
    on: Literal["fields", "spectra"] = Field(
        "fields", description="what the discriminator sees: the fields or their power spectra"
    )
    width: int = Field(32, gt=0, description="discriminator channels of the first layer")
    n_layers: int = Field(3, gt=0, description="discriminator halvings of the grid (on: fields)")
    spectrum_bins: int = Field(
        16, gt=0, description="annuli of the spectrum, up to Nyquist (on: spectra)"
    )
    spectrum_min: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="lowest wavenumber judged, cycles per cell (on: spectra; 0: all)",
    )
    spectral_norm: bool = Field(True, description="spectral normalisation of its layers")
    r1_weight: float = Field(0.0, ge=0, description="R1 gradient penalty on real samples")
    lr: float | None = Field(None, gt=0, description="its learning rate (null: train.lr)")

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    def grid_problem(self, method: str, ny: int, nx: int) -> str | None:
        """Why the discriminator cannot judge ``ny x nx`` fields of ``method`` (one line naming
        the key to change), or None when it can or is off."""
        if not self.enabled:
            return None
        if self.on == "spectra":
            most = int((0.5 - self.spectrum_min) * min(ny, nx) + 1e-9)
            if self.spectrum_bins <= most:
                return None
            return (
                f"{method}.adversarial.spectrum_bins={self.spectrum_bins}: {ny} x {nx} fields "
                f"resolve at most {most} annuli of their spectrum above spectrum_min="
                f"{self.spectrum_min:g}; lower spectrum_bins"
            )
        if ny % 2**self.n_layers == 0 and nx % 2**self.n_layers == 0:
            return None
        return (
            f"{method}.adversarial.n_layers={self.n_layers}: the discriminator halves the "
            f"{ny} x {nx} fields {self.n_layers} times, which they do not allow; lower n_layers"
        )


#: ``fields(model, batch) -> (terms, real, fake)``: the generator's named loss terms (``"loss"``
#: among them) and the real and generated samples the discriminator judges (same shape).
FieldsFn = Callable[[nn.Module, Any], tuple[dict[str, Tensor], Tensor, Tensor]]


def r1_penalty(discriminator: nn.Module, real: Tensor) -> Tensor:
    """R1 penalty ``E ||grad_x D(x)||^2`` on real samples (Mescheder et al. 2018).

    Examples
    --------
    >>> d = nn.Linear(3, 1)
    >>> with torch.no_grad():
    ...     _ = d.weight.copy_(torch.tensor([[1.0, 2.0, 2.0]]))
    >>> float(r1_penalty(d, torch.zeros(4, 3)))  # |w|^2 = 9
    9.0
    """
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


class AdversarialTaskModule(TaskModule):
    """A generator ``model`` trained on its own loss plus ``weight`` times the adversarial loss of
    a ``discriminator``, alternating one discriminator step and one generator step per batch.

    Parameters
    ----------
    model : the generator (any plain ``nn.Module``).
    fields : ``(model, batch) -> (terms, real, fake)`` (:data:`FieldsFn`).
    spec : the generator's optimiser, schedule and clipping (``train`` section).
    discriminator : ``(B, ...) -> logits``, any shape of logits (each is one judgement).
    weight : weight of the adversarial term in the generator's loss.
    kind : ``"non_saturating"`` or ``"hinge"``.
    d_lr : the discriminator's learning rate (default: ``spec.lr``).
    r1_weight : weight of the R1 penalty in the discriminator's loss (0: none).
    describe_batch, metadata : as for :class:`~geodl.training.TaskModule`.
    """

    def __init__(
        self,
        model: nn.Module,
        fields: FieldsFn,
        spec: TrainSection,
        *,
        discriminator: nn.Module,
        weight: float = 0.01,
        kind: str = "non_saturating",
        d_lr: float | None = None,
        r1_weight: float = 0.0,
        describe_batch: Callable[[Any], str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            model,
            lambda m, b: fields(m, b)[0],
            spec,
            describe_batch=describe_batch,
            metadata=metadata,
        )
        self.fields = fields
        self.discriminator = discriminator
        self.weight = float(weight)
        self.kind = kind
        self.d_lr = float(d_lr if d_lr is not None else spec.lr)
        self.r1_weight = float(r1_weight)
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        g_opt, d_opt = self.optimizers()
        terms, real, fake = self.fields(self.model, batch)
        # discriminator step, on the generator's output as it is now (no gradient into it)
        self.toggle_optimizer(d_opt)
        d_loss = adversarial_discriminator_loss(
            self.discriminator(real), self.discriminator(fake.detach()), kind=self.kind
        )
        if self.r1_weight > 0:
            d_loss = d_loss + self.r1_weight * r1_penalty(self.discriminator, real)
        d_opt.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        d_opt.step()
        self.untoggle_optimizer(d_opt)
        # generator step: its own loss plus the adversarial term
        self.toggle_optimizer(g_opt)
        adv = adversarial_generator_loss(self.discriminator(fake), kind=self.kind)
        loss = terms["loss"] + self.weight * adv
        if not torch.isfinite(loss) or not torch.isfinite(d_loss):
            where = self.describe_batch(batch)
            raise TrainingDiverged(
                f"adversarial training loss is {loss.item()} (discriminator {d_loss.item()}) at "
                f"step {self.global_step}{', ' + where if where else ''}; lower train.lr or the "
                "adversarial weight, or set the discriminator's spectral_norm or r1"
            )
        g_opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.spec.grad_clip:
            self.clip_gradients(g_opt, gradient_clip_val=self.spec.grad_clip)
        g_opt.step()
        self.untoggle_optimizer(g_opt)
        sched = self.lr_schedulers()
        if sched is not None and not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step()
        logged = {**terms, "loss": loss.detach(), "adv_g": adv.detach(), "adv_d": d_loss.detach()}
        self._log_terms("train", logged, self._batch_size(batch))
        return loss.detach()

    def on_validation_epoch_end(self) -> None:
        sched = self.lr_schedulers()
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            value = self.trainer.callback_metrics.get("val/loss")
            if value is not None:
                sched.step(value)

    def configure_optimizers(self) -> Any:
        base = super().configure_optimizers()
        d_params = [p for p in self.discriminator.parameters() if p.requires_grad]
        d_opt = torch.optim.Adam(d_params, lr=self.d_lr, betas=(0.5, 0.9))
        return [base["optimizer"], d_opt], [base["lr_scheduler"]]


def generator_module(
    model: nn.Module,
    loss_fn: LossFn,
    fields: FieldsFn | None,
    spec: TrainSection,
    adversarial: AdversarialSection,
    *,
    channels: int,
    n_times: int,
    **kwargs: Any,
) -> TaskModule:
    """The Lightning adapter of a learned method: a plain :class:`TaskModule` on ``loss_fn``, or,
    with ``adversarial.weight > 0``, an :class:`AdversarialTaskModule` on ``fields`` with a
    :class:`~geodl.models.PatchDiscriminator` (``on: fields``) or a
    :class:`~geodl.models.SpectrumDiscriminator` (``on: spectra``) of ``channels`` fields at
    ``n_times`` times. ``kwargs`` (``describe_batch``, ``metadata``) go to the module."""
    if not adversarial.enabled:
        return TaskModule(model, loss_fn, spec, **kwargs)
    if fields is None:
        raise ValueError("adversarial training needs fields(model, batch) -> (terms, real, fake)")
    from geodl.models import PatchDiscriminator, SpectrumDiscriminator

    disc: nn.Module
    if adversarial.on == "spectra":
        disc = SpectrumDiscriminator(
            channels,
            n_times,
            n_bins=adversarial.spectrum_bins,
            width=adversarial.width,
            k_min=adversarial.spectrum_min,
            spectral_norm=adversarial.spectral_norm,
        )
    else:
        disc = PatchDiscriminator(
            channels,
            n_times,
            width=adversarial.width,
            n_layers=adversarial.n_layers,
            spectral_norm=adversarial.spectral_norm,
        )
    return AdversarialTaskModule(
        model,
        fields,
        spec,
        discriminator=disc,
        weight=adversarial.weight,
        kind=adversarial.kind,
        d_lr=adversarial.lr,
        r1_weight=adversarial.r1_weight,
        **kwargs,
    )
