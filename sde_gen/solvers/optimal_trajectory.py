"""Analytic-DPM's optimal trajectory (Bao et al. 2022, §4): the times that minimise the bound.

With the KL-optimal variance σ*² of a step t → s, the expected KL of the step is

    E KL(q(x_s | x_t, x0) ‖ N(μ̃(x_t, x̂0), σ*² I)) = (d/2) log(σ*²/λ²),  λ² = β̃,

because the mean term adds σ*² − λ² and the two Gaussian traces then add to d. So the terms of
the bound that depend on the times are Σ_k J(t_k, t_{k+1}) with J(t, s) = log(σ*²_{s|t}/λ²_{s|t})
≥ 0, and the K noisy hops from T to t_min that minimise the sum are found exactly by dynamic
programming over ``candidates`` times uniform in t (O(K M²) for M candidates; Γ_t is needed only
at the candidates, from one calibration). ``OptimalTrajectory`` is the grid entry that asks
``AnalyticDPM`` for this; other solvers have no Γ_t and refuse it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde_gen.sde import SDE
from sde_gen.solvers.base import check_int
from sde_gen.solvers.grids import Grid, UniformGrid

__all__ = ["OptimalTrajectory", "hop_costs", "cheapest_path"]


class OptimalTrajectory(Grid):
    """The grid ``AnalyticDPM`` resolves from its calibration (``solver/grid=optimal_trajectory``):
    the cheapest path in J over ``candidates`` + 1 times uniform in t from T to t_min."""

    standalone = False  # its times come from Analytic-DPM's calibration

    def __init__(self, candidates: int = 200):
        self.candidates = check_int("candidates", candidates, 2)

    def __repr__(self) -> str:
        return f"OptimalTrajectory(candidates={self.candidates})"

    def candidate_times(self, sde: SDE, t_min: float) -> Tensor:
        """T = c_0 > c_1 > … > c_M = t_min, uniform in t (M = ``candidates``)."""
        return UniformGrid()(sde, self.candidates, t_min)

    def times(self, sde: SDE, u: Tensor, t_min: float) -> Tensor:
        raise ValueError(
            "solver/grid=optimal_trajectory is chosen from Analytic-DPM's Γ_t: use it with "
            "solver=analytic_dpm (after solver.calibrate)"
        )


def hop_costs(sde: SDE, times: Tensor, variance) -> Tensor:
    """J[i, j] = log(σ²_{j|i}/λ²_{j|i}) for every hop times[i] → times[j], i < j (inf elsewhere),
    with σ² = ``variance(i, t, s)`` for index and time tensors of the hops (λ² = β̃ of the hop)."""
    m = len(times)
    i, j = torch.triu_indices(m, m, offset=1)
    t, s = times[i], times[j]
    lambda2 = sde.posterior(s, t)[2]
    cost = torch.full((m, m), math.inf, dtype=torch.float64)
    cost[i, j] = torch.log(variance(i, t, s) / lambda2)
    return cost


def cheapest_path(cost: Tensor, hops: int) -> list[int]:
    """Indices 0 = p_0 < p_1 < … < p_K = M − 1 (K = ``hops``) minimising Σ_k cost[p_k, p_k+1]
    (dynamic programming over (hops taken, node))."""
    m = cost.shape[0]
    if not 1 <= hops <= m - 1:
        raise ValueError(f"{hops} noisy steps need between 1 and {m - 1} candidate hops")
    best = torch.full((m,), math.inf, dtype=torch.float64)
    best[0] = 0.0
    parent = torch.zeros((hops + 1, m), dtype=torch.long)
    for k in range(1, hops + 1):
        total = best[:, None] + cost  # total[i, j]: reach i in k − 1 hops, then hop to j
        best, parent[k] = total.min(0)
    path = [m - 1]
    for k in range(hops, 0, -1):
        path.append(int(parent[k, path[-1]]))
    return path[::-1]
