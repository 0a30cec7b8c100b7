"""Typed settings of the command-line tools, registered in Hydra's ConfigStore.

The primary configs ``conf/{train,sample,eval}.yaml`` start from these schemas, so OmegaConf itself
rejects unknown keys and values of the wrong type (``n=2.7``, ``ema=maybe``) while composing, and
reads ``yes``/``no``/``true``/``false`` as real booleans. Ranges are checked once, in each
dataclass's ``__post_init__``, when ``OmegaConf.to_object`` builds the settings object. The
groups that pick classes (``sde``, ``model``, ``solver`` …) stay free-form ``_target_`` nodes.
"""

from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from sde_gen.training.settings import Precision, TrainerSettings, _finite, _need, _positive

__all__ = [
    "TrainerSettings",
    "Precision",
    "TrainConfig",
    "SampleConfig",
    "EvalConfig",
    "Split",
    "FitGridConfig",
    "register_configs",
    "register_fit_grid_config",
    "ExportConfig",
    "register_export_config",
    "settings_from",
]


def _check_common(seed: int, threads: int | None, dist_timeout: float = 1.0) -> None:
    _need(seed >= 0, "seed", seed, "a non-negative integer")
    _positive("threads", threads)
    _need(dist_timeout > 0 and _finite(dist_timeout), "dist_timeout", dist_timeout, "seconds > 0")


def _check_chunk_seed(seed: int) -> None:
    """Sampling and evaluation seed chunk c from (seed, c) in 32 bits (``runtime.sharding``)."""
    _need(seed < 2**32, "seed", seed, "an integer in [0, 2**32)")


@dataclass
class TrainConfig:
    """``sde-gen-train``: the groups that build the run, the loop, and the process settings."""

    sde: Any = MISSING
    loss: Any = MISSING
    model: Any = MISSING
    data: Any = MISSING
    solver: Any = None  # the sampler of the run's sample plots (None: no plots)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # None: 1 thread for small models on a CPU, else torch's
    dist_timeout: float = 300.0  # seconds every torchrun rank has to join (runtime.distributed)

    def __post_init__(self) -> None:
        _check_common(self.seed, self.threads, self.dist_timeout)


@dataclass
class SolverRunConfig:
    """What every command that runs a solver on a score source names first (its fields lead the
    schemas of ``sde-gen-sample`` and ``sde-gen-fit-grid``)."""

    data: Any = MISSING
    sde: Any = MISSING
    solver: Any = MISSING
    checkpoint: str | None = None
    model: Any = None  # model=diffusers model.path=<folder> (networks.source.load_model_node)
    ema: bool = True


@dataclass
class SampleConfig(SolverRunConfig):
    """``sde-gen-sample``: a score source (checkpoint or exact mixture), a solver, how many."""

    n: int = 1000
    steps: int | None = None  # a fixed-step solver's solver.steps; adaptive solvers ignore it
    seed: int = 0
    record: bool = False
    batch_size: int = 1000  # samples a chunk: chunk c draws from a generator seeded by (seed, c)
    features: Any = None  # a module whose features give FD and KID against the test split
    kid_subsets: int = 50
    kid_subset_size: int = 1000
    export_png: bool = False  # <run>/png/000000.png …, for clean-fid / torch-fidelity
    device: str = "auto"
    threads: int | None = None
    dist_timeout: float = 300.0  # seconds every torchrun rank has to join
    progress: bool = True
    plot: bool = True

    def __post_init__(self) -> None:
        _check_common(self.seed, self.threads, self.dist_timeout)
        _check_chunk_seed(self.seed)
        _need(self.n >= 2, "n", self.n, "an integer >= 2")
        for key in ("batch_size", "kid_subsets", "steps"):
            _positive(key, getattr(self, key))
        _need(self.kid_subset_size >= 2, "kid_subset_size", self.kid_subset_size, "an integer >= 2")


class Split(Enum):
    """Which part of a finite data set is evaluated."""

    train = "train"
    test = "test"


@dataclass
class EvalConfig:
    """``sde-gen-eval``: NLL and bits/dim of a likelihood (config group ``likelihood``, the PF-ODE
    by default, its options checked by the object), and the SDE's own variational bound."""

    data: Any = MISSING
    sde: Any = MISSING
    likelihood: Any = MISSING  # likelihood=pf_ode | ddpm_vlb | vdm_vlb (config group)
    checkpoint: str | None = None
    model: Any = None  # model=diffusers model.path=<folder> (networks.source.load_model_node)
    ema: bool = True
    split: Split = Split.test
    n: int | None = 512  # None: the whole split
    batch_size: int = 256  # a chunk: its dequantization and probes seeded by (seed, chunk)
    num_dequant: int = 1
    vlb: bool = True  # also the SDE's own variational bound (``SDE.variational_bound``)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    dist_timeout: float = 300.0  # seconds every torchrun rank has to join
    progress: bool = True

    def __post_init__(self) -> None:
        _check_common(self.seed, self.threads, self.dist_timeout)
        _check_chunk_seed(self.seed)
        for key in ("n", "batch_size", "num_dequant"):
            _positive(key, getattr(self, key))


SCHEMAS = (
    ("train_schema", TrainConfig),
    ("sample_schema", SampleConfig),
    ("eval_schema", EvalConfig),
)


def register_configs(store: ConfigStore | None = None) -> None:
    """Put the schemas into Hydra's ConfigStore (``train_schema``, ``sample_schema``,
    ``eval_schema``), where the primary configs' defaults lists find them. Idempotent."""
    store = ConfigStore.instance() if store is None else store
    for name, node in SCHEMAS:
        store.store(name=name, node=node)


def settings_from(cfg: DictConfig, schema: type) -> Any:
    """The typed settings object of ``cfg`` (a composed config or one of its nodes): unknown keys
    and wrong types are rejected by OmegaConf, ranges by the schema's ``__post_init__``. Nodes of
    type ``Any`` (the ``_target_`` groups) stay DictConfigs."""
    _reject_unknown(cfg, schema, "")
    typed = OmegaConf.merge(OmegaConf.structured(schema), cfg)
    return OmegaConf.to_object(typed)


def _reject_unknown(node: DictConfig, schema: type, prefix: str) -> None:
    """Keys a schema lacks (added with Hydra's ``+key=value``, which bypasses struct mode)."""
    known = {f.name: f.type for f in fields(schema)}
    for key in node.keys():
        if key not in known:
            raise ValueError(
                f"unknown key {prefix}{key}: {schema.__name__} has {', '.join(sorted(known))}"
            )
        if is_dataclass(known[key]) and isinstance(node[key], DictConfig):
            _reject_unknown(node[key], known[key], f"{prefix}{key}.")


@dataclass
class FitGridConfig(SolverRunConfig):
    """``sde-gen-fit-grid``: a score source, a fixed-step solver, pilot and held-out x_T, the
    validation fraction of the pilot, the objective, the search budget and the teacher's
    tolerance."""

    objective: Any = MISSING  # config group objective: rms | trimmed | log (fit_objectives)
    n: int = 1000  # pilot x_T (the fit) and, as many again, held-out x_T (seed + 1)
    validation: float = 0.3  # fraction of the pilot held out to choose fit vs best fixed grid
    n_held_out: int | None = None  # None: n
    seed: int = 0
    maxiter: int = 200  # solver runs of the search
    method: str = "Nelder-Mead"  # scipy.optimize.minimize: Nelder-Mead | Powell
    teacher_tol: float = 1e-7  # rtol = atol of the PF-ODE teacher (DOP853)
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        _need(self.n >= 2, "n", self.n, "an integer >= 2")
        _need(
            self.n_held_out is None or self.n_held_out >= 2,
            "n_held_out",
            self.n_held_out,
            "null or an integer >= 2",
        )
        _need(0 <= self.validation < 1, "validation", self.validation, "a fraction in [0, 1)")
        _need(self.seed >= 0, "seed", self.seed, "a non-negative integer")
        _need(self.maxiter >= 1, "maxiter", self.maxiter, "an integer >= 1")
        methods = ("Nelder-Mead", "Powell")
        _need(self.method in methods, "method", self.method, f"one of {methods}")
        _need(0 < self.teacher_tol < 1, "teacher_tol", self.teacher_tol, "a number in (0, 1)")
        _need(
            self.threads is None or self.threads >= 1,
            "threads",
            self.threads,
            "null or an integer >= 1",
        )


def register_fit_grid_config(store: ConfigStore | None = None) -> None:
    """Store ``fit_grid_schema`` (idempotent)."""
    store = ConfigStore.instance() if store is None else store
    store.store(name="fit_grid_schema", node=FitGridConfig)


@dataclass
class ExportConfig:
    """``sde-gen-export``: a ``model=diffusers_unet`` checkpoint and the folder to write."""

    checkpoint: str = MISSING
    out: str = MISSING
    ema: bool = True


def register_export_config(store: ConfigStore | None = None) -> None:
    """Store ``export_schema`` (idempotent)."""
    store = ConfigStore.instance() if store is None else store
    store.store(name="export_schema", node=ExportConfig)
