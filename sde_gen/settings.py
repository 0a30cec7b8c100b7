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

__all__ = [
    "TrainerSettings",
    "Precision",
    "TrainConfig",
    "SampleConfig",
    "EvalConfig",
    "Split",
    "ScipyMethod",
    "register_configs",
    "settings_from",
]


def _need(ok: bool, key: str, value: Any, what: str) -> None:
    if not ok:
        raise ValueError(f"{key}={value!r} is invalid: need {what}")


def _positive(key: str, value: int | None) -> None:
    _need(value is None or value >= 1, key, value, "an integer >= 1")


class Precision(Enum):
    """Arithmetic of the network's forward pass in training (``torch.autocast``); the schedule
    (γ, σ, λ, weights) stays in float64 and the weights in float32 whatever the choice."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"  # with a GradScaler


@dataclass
class TrainerSettings:
    """The training loop: AdamW with linear warm-up, clipping, EMA, logging and checkpoints."""

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 100
    grad_clip: float | None = 1.0  # None: no clipping (the norm is still logged)
    ema_decay: float = 0.995
    log_every: int = 50
    sample_every: int | None = None
    sample_count: int = 1000
    checkpoint_every: int | None = 500
    keep_checkpoints: int | None = 3
    checkpoint_dir: str | None = None  # None: <run dir>/checkpoints
    resume: str | None = None  # None | a checkpoint path | "latest" | "auto" (latest, or fresh)
    progress: bool = True
    precision: Precision = Precision.fp32
    compile: bool = False  # torch.compile the network
    accumulate: int = 1  # micro-batches of batch_size per optimizer step (batch: accumulate × it)
    workers: int = 0  # DataLoader worker processes for finite data sets (0: the main process)

    def __post_init__(self) -> None:
        p = "trainer."
        try:
            self.precision = Precision(getattr(self.precision, "value", self.precision))
        except ValueError:
            allowed = "|".join(m.value for m in Precision)
            raise ValueError(
                f"trainer.precision={self.precision!r} is invalid: need {allowed}"
            ) from None
        _need(self.workers >= 0, p + "workers", self.workers, "an integer >= 0")
        for key in ("steps", "batch_size", "log_every", "sample_count", "accumulate"):
            _positive(p + key, getattr(self, key))
        for key in ("sample_every", "checkpoint_every", "keep_checkpoints"):
            _positive(p + key, getattr(self, key))
        _need(self.lr > 0 and _finite(self.lr), p + "lr", self.lr, "a finite learning rate > 0")
        _need(
            self.weight_decay >= 0 and _finite(self.weight_decay),
            p + "weight_decay",
            self.weight_decay,
            "a finite value >= 0",
        )
        betas = list(self.betas)
        _need(
            len(betas) == 2 and all(0 <= b < 1 for b in betas),
            p + "betas",
            betas,
            "two values in [0, 1)",
        )
        _need(self.warmup_steps >= 0, p + "warmup_steps", self.warmup_steps, "an integer >= 0")
        clip = self.grad_clip
        _need(
            clip is None or (clip > 0 and _finite(clip)),
            p + "grad_clip",
            clip,
            "null (no clipping) or a finite value > 0",
        )
        _need(0 <= self.ema_decay < 1, p + "ema_decay", self.ema_decay, "a value in [0, 1)")


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


def _check_common(seed: int, threads: int | None) -> None:
    _need(seed >= 0, "seed", seed, "a non-negative integer")
    _positive("threads", threads)


def _check_chunk_seed(seed: int) -> None:
    """Sampling and evaluation seed chunk c from (seed, c) in 32 bits (``sde_gen.sharding``)."""
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

    def __post_init__(self) -> None:
        _check_common(self.seed, self.threads)


@dataclass
class SampleConfig:
    """``sde-gen-sample``: a score source (checkpoint or exact mixture), a solver, how many."""

    data: Any = MISSING
    sde: Any = MISSING
    solver: Any = MISSING
    checkpoint: str | None = None
    ema: bool = True
    n: int = 1000
    seed: int = 0
    record: bool = False
    batch_size: int = 1000  # samples a chunk: chunk c draws from a generator seeded by (seed, c)
    features: Any = None  # a module whose features give FD and KID against the test split
    kid_subsets: int = 50
    kid_subset_size: int = 1000
    export_png: bool = False  # <run>/png/000000.png …, for clean-fid / torch-fidelity
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    plot: bool = True

    def __post_init__(self) -> None:
        _check_common(self.seed, self.threads)
        _check_chunk_seed(self.seed)
        _need(self.n >= 2, "n", self.n, "an integer >= 2")
        for key in ("batch_size", "kid_subsets"):
            _positive(key, getattr(self, key))
        _need(self.kid_subset_size >= 2, "kid_subset_size", self.kid_subset_size, "an integer >= 2")


class Split(Enum):
    """Which part of a finite data set is evaluated."""

    train = "train"
    test = "test"


class ScipyMethod(Enum):
    """``scipy.integrate.solve_ivp`` methods."""

    RK45 = "RK45"
    RK23 = "RK23"
    DOP853 = "DOP853"
    Radau = "Radau"
    BDF = "BDF"
    LSODA = "LSODA"


@dataclass
class EvalConfig:
    """``sde-gen-eval``: NLL and bits/dim through the probability-flow ODE."""

    data: Any = MISSING
    sde: Any = MISSING
    probe: Any = MISSING  # Hutchinson probe (config group)
    prior: Any = MISSING  # the prior π at T (config group)
    checkpoint: str | None = None
    ema: bool = True
    split: Split = Split.test
    n: int | None = 512  # None: the whole split
    batch_size: int = 256  # a chunk: its dequantization and probes seeded by (seed, chunk)
    exact_trace: bool = False
    num_probes: int = 1
    num_dequant: int = 1
    rtol: float = 1e-5
    atol: float = 3e-5
    logp_atol: float = 1e-3
    method: ScipyMethod = ScipyMethod.RK45
    t_min: float = 1e-5
    vlb: bool = True
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        _check_common(self.seed, self.threads)
        _check_chunk_seed(self.seed)
        for key in ("n", "batch_size", "num_probes", "num_dequant"):
            _positive(key, getattr(self, key))
        for key in ("rtol", "atol", "logp_atol", "t_min"):
            value = getattr(self, key)
            _need(value > 0 and _finite(value), key, value, "a finite number > 0")


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
