"""Training objectives: continuous DSM with weighting λ(t) and time sampler r(t) (survey §4.3),
and the discrete DDPM losses L_simple, L_vlb, L_hybrid (survey §3.1).

Contract (held once in ``base.Loss``): ``loss.draw(model, x0, generator) -> draws`` (the batch's
times and noise, from x0's shape only) and ``loss.evaluate(model, x0, draws) -> SampleLosses``
(per-sample losses), so the trainer can draw a global batch once and evaluate slices of it (DDP
ranks, accumulation); ``loss(model, x0, generator)`` is the mean of the two in one call. A loss
that adapts to what it sees (loss-aware step sampling) takes the feedback in ``update`` and
exposes ``state_dict()``/``load_state_dict()``.
"""

from sde_gen.losses.base import Loss, SampleLosses
from sde_gen.losses.discrete import (
    HybridLoss,
    SimpleLoss,
    VLBLoss,
    model_mean_log_variance,
    prior_term,
    schedule_of,
    vlb,
    vlb_term,
    vlb_terms,
)
from sde_gen.losses.dsm import DSMLoss
from sde_gen.losses.step_samplers import LossAwareStepSampler, StepSampler, UniformStepSampler
from sde_gen.losses.time_samplers import ImportanceTimeSampler, TimeSampler, UniformTimeSampler
from sde_gen.losses.vdm import VDMLoss, vdm_vlb
from sde_gen.losses.weighting import (
    LikelihoodWeighting,
    OnesWeighting,
    SigmaSquaredWeighting,
    Weighting,
)

__all__ = [
    "Loss",
    "SampleLosses",
    "DSMLoss",
    "VDMLoss",
    "vdm_vlb",
    "TimeSampler",
    "UniformTimeSampler",
    "ImportanceTimeSampler",
    "Weighting",
    "SigmaSquaredWeighting",
    "LikelihoodWeighting",
    "OnesWeighting",
    "SimpleLoss",
    "VLBLoss",
    "HybridLoss",
    "StepSampler",
    "UniformStepSampler",
    "LossAwareStepSampler",
    "model_mean_log_variance",
    "vlb_term",
    "prior_term",
    "vlb_terms",
    "vlb",
    "schedule_of",
]
