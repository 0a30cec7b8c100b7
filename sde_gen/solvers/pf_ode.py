"""The probability-flow ODE dx/dt = f(t) x − ½ g(t)² ∇log q_t(x) (Song et al. 2021, eq. 13),
integrated from T to t_min by scipy's ``solve_ivp`` or by ``torchsde.sdeint`` (zero diffusion).

The backend is an integrator object (config ``backend: {_target_: …}``):
``ScipyODE(method, rtol, atol)`` or ``TorchsdeODE(method, steps, adaptive, rtol, atol)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import scipy.sparse
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from sde_gen.sde import SDE
from sde_gen.sde.coordinates import AngleCoordinates, ScaledCoordinates, TimeCoordinates
from sde_gen.sde.score_fn import ScoreFn
from sde_gen.solvers.base import Solver, check_int
from sde_gen.solvers.torchsde_adapter import check_method, torchsde_integrate

__all__ = [
    "PFODE",
    "ScipyODE",
    "TorchsdeODE",
    "TimeCoordinates",
    "ScaledCoordinates",
    "AngleCoordinates",
]

# solve_ivp methods and their order (BDF, LSODA: the highest order they switch to)
SCIPY_METHODS = {"RK45": 5.0, "RK23": 3.0, "DOP853": 8.0, "Radau": 5.0, "BDF": 5.0, "LSODA": 12.0}
IMPLICIT = ("Radau", "BDF")


def _check_tol(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and value > 0):
        raise ValueError(f"{name}={value} must be > 0")
    return float(value)


class _Integrator:
    """A PF-ODE integrator of ``PFODE``; its repr names the options it was built with."""

    def __repr__(self) -> str:
        names = [k for k in inspect.signature(type(self).__init__).parameters if k != "self"]
        opts = ", ".join(f"{k}={getattr(self, k)!r}" for k in names)
        return f"{type(self).__name__}({opts})"


class ScipyODE(_Integrator):
    """``solve_ivp`` on the whole batch flattened into one state vector (float64).

    ``coordinates``: ``TimeCoordinates()`` (x in t, the default), ``ScaledCoordinates()``
    (x/γ in log σ̃: smooth for discrete schedules) or ``AngleCoordinates()`` (x/√(γ²+σ²) in
    arctan σ̃: smooth too, and the fewest evaluations, docs/results.md). Implicit methods get the
    Jacobian's block-diagonal structure (samples are independent), so a finite-difference Jacobian
    costs one evaluation per data dimension, not per state entry.
    """

    adaptive = True
    evals_per_step = None

    def __init__(
        self,
        method: str = "RK45",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        coordinates: TimeCoordinates | None = None,
    ):
        if method not in SCIPY_METHODS:
            raise ValueError(
                f"method={method!r} is not a solve_ivp method; allowed: {tuple(SCIPY_METHODS)}"
            )
        self.method, self.rtol, self.atol = (
            method,
            _check_tol("rtol", rtol),
            _check_tol("atol", atol),
        )
        self.order = SCIPY_METHODS[method]
        self.coordinates = TimeCoordinates() if coordinates is None else coordinates
        if not isinstance(self.coordinates, TimeCoordinates):
            raise ValueError(
                f"coordinates={coordinates!r} must be TimeCoordinates, ScaledCoordinates or "
                "AngleCoordinates"
            )

    def expected_nfe(self) -> None:
        """Unknown in advance: the steps adapt to rtol and atol."""
        return None

    def __call__(
        self, sde: SDE, score: ScoreFn, x_T: Tensor, t_min: float, t_eval: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        shape, dtype, device = x_T.shape, x_T.dtype, x_T.device
        coords = self.coordinates
        u_T, u_min = coords.bounds(sde, t_min)

        def to_tensor(y: np.ndarray) -> Tensor:
            return (
                torch.as_tensor(y, dtype=torch.float64)
                .reshape(shape)
                .to(device=device, dtype=dtype)
            )

        def rhs(u: float, y: np.ndarray) -> np.ndarray:
            dy = coords.rhs(sde, score, to_tensor(y), u)
            return dy.detach().to("cpu", torch.float64).reshape(-1).numpy()

        extra = {}
        batch, dim = shape[0], int(np.prod(shape[1:]))
        if self.method in IMPLICIT:
            extra["jac_sparsity"] = scipy.sparse.block_diag([np.ones((dim, dim))] * batch)
        elif self.method == "LSODA":
            extra["lband"] = extra["uband"] = dim - 1
        y0 = coords.to_state(sde, x_T.detach().to("cpu", torch.float64), u_T).reshape(-1).numpy()
        with torch.no_grad():
            sol = solve_ivp(
                rhs,
                (u_T, u_min),
                y0,
                method=self.method,
                rtol=self.rtol,
                atol=self.atol,
                dense_output=t_eval is not None,
                **extra,
            )
        if not sol.success:
            raise ValueError(f"solve_ivp({self.method}) failed: {sol.message}")
        x0 = coords.to_x(sde, to_tensor(sol.y[:, -1]), u_min)
        if t_eval is None:
            return x0, x0[None]
        # dense output at the recorded times (the steps are those of the unrecorded run)
        u_eval = coords.u_of_t(sde, t_eval).clamp(min(u_T, u_min), max(u_T, u_min))
        ys = torch.as_tensor(sol.sol(u_eval.numpy()).T)
        path = torch.stack(
            [coords.to_x(sde, to_tensor(y.numpy()), float(u)) for y, u in zip(ys, u_eval)]
        )
        path[0], path[-1] = x_T, x0
        return x0, path


class TorchsdeODE(_Integrator):
    """``torchsde.sdeint`` on the PF-ODE as a zero-diffusion SDE in flipped time u = T − t:
    ``steps`` fixed steps, or error-controlled ones from that initial size when ``adaptive``."""

    def __init__(
        self,
        method: str = "midpoint",
        steps: int = 100,
        adaptive: bool = False,
        rtol: float = 1e-5,
        atol: float = 1e-5,
    ):
        self._method = check_method(method)
        self.method = method
        self.steps, self.adaptive = check_int("steps", steps, 1), bool(adaptive)
        self.rtol, self.atol = _check_tol("rtol", rtol), _check_tol("atol", atol)
        self.order = self._method.order
        self.evals_per_step = None if self.adaptive else self._method.evals_per_step

    def expected_nfe(self) -> int | None:
        """Drift evaluations of the fixed steps (None when adaptive)."""
        return None if self.adaptive else self._method.nfe(self.steps)

    def __call__(
        self, sde: SDE, score: ScoreFn, x_T: Tensor, t_min: float, t_eval: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        return torchsde_integrate(
            sde,
            score,
            x_T,
            t_min,
            probability_flow=True,
            method=self.method,
            steps=self.steps,
            adaptive=self.adaptive,
            rtol=self.rtol,
            atol=self.atol,
            record_times=t_eval,
        )


Integrator = Callable[[SDE, ScoreFn, Tensor, float, Tensor | None], tuple[Tensor, Tensor]]


class PFODE(Solver):
    """Probability-flow ODE sampler; ``nfe`` is the number of drift evaluations the backend used
    (including finite-difference Jacobians of implicit scipy methods).

    ``record_points`` times, uniform in t from T to t_min, are recorded when ``record=True``
    (dense output; the steps taken do not change). ``order``, ``adaptive`` and
    ``evals_per_step`` are the backend's.
    """

    order: float = 5.0
    stochastic = False
    evals_per_step: int | None = None
    adaptive: bool = True

    def __init__(
        self,
        backend: Integrator | None = None,
        t_min: float = 1e-3,
        denoise_final: bool = False,
        record_points: int = 51,
        progress: bool = False,
    ):
        super().__init__(t_min=t_min, denoise_final=denoise_final, progress=progress)
        self.backend = ScipyODE() if backend is None else backend
        declared = ("order", "adaptive", "evals_per_step", "expected_nfe")
        if not callable(self.backend) or not all(hasattr(self.backend, a) for a in declared):
            raise ValueError(f"backend={backend!r} must be ScipyODE or TorchsdeODE")
        self.record_points = check_int("record_points", record_points, 2)
        self.order, self.adaptive = self.backend.order, self.backend.adaptive
        self.evals_per_step = self.backend.evals_per_step

    def expected_nfe(self) -> int | None:
        """The fixed-step backend's count (+1 for denoise_final); None when adaptive."""
        nfe = self.backend.expected_nfe()
        return None if nfe is None else nfe + int(self.denoise_final)

    def __repr__(self) -> str:
        return (
            f"PFODE(backend={self.backend!r}, t_min={self.t_min}, "
            f"denoise_final={self.denoise_final})"
        )

    def integrate(self, sde, score, x_T, generator, keep, record) -> Tensor:
        t_eval = None
        if record:
            t_eval = torch.linspace(sde.T, self.t_min, self.record_points, dtype=torch.float64)
        x0, path = self.backend(sde, score, x_T, self.t_min, t_eval)
        if record:
            for t, x in zip(t_eval.tolist(), path, strict=True):
                keep(t, x)
        return x0
