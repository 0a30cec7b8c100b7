"""The DSM loss through Hydra's config groups: ``loss/weighting`` and ``loss/time_sampler`` pick
the objects, the ``loss/dsm*`` presets are built from them, and a sweep over a group composes."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException

from sde_gen.losses import (
    DSMLoss,
    ImportanceTimeSampler,
    LikelihoodWeighting,
    OnesWeighting,
    SigmaSquaredWeighting,
    UniformTimeSampler,
)

CONF = Path(__file__).resolve().parents[1] / "sde_gen" / "conf" / "loss"
WEIGHTING_OPTIONS = {
    "sigma2": SigmaSquaredWeighting,
    "likelihood": LikelihoodWeighting,
    "ones": OnesWeighting,
}
SAMPLER_OPTIONS = {"uniform": UniformTimeSampler, "importance": ImportanceTimeSampler}
PRESETS = {  # name: (weighting, time sampler, t_min)
    "dsm": (SigmaSquaredWeighting, UniformTimeSampler, 1e-5),
    "dsm_likelihood": (LikelihoodWeighting, UniformTimeSampler, 1e-5),
    "dsm_likelihood_is": (LikelihoodWeighting, ImportanceTimeSampler, 1e-5),
    "dsm_ones_is": (OnesWeighting, ImportanceTimeSampler, 1e-3),
}


def _loss(*overrides: str, primary: str | None = "train") -> DSMLoss:
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        cfg = compose(primary, overrides=list(overrides))
    return hydra.utils.instantiate(cfg.loss)


def test_every_group_option_is_tested():
    assert {p.stem for p in (CONF / "weighting").glob("*.yaml")} == set(WEIGHTING_OPTIONS)
    assert {p.stem for p in (CONF / "time_sampler").glob("*.yaml")} == set(SAMPLER_OPTIONS)


@pytest.mark.parametrize("sampler", list(SAMPLER_OPTIONS))
@pytest.mark.parametrize("weighting", list(WEIGHTING_OPTIONS))
def test_groups_switch_the_objects_of_dsm(weighting, sampler):
    loss = _loss("loss=dsm", f"loss/weighting={weighting}", f"loss/time_sampler={sampler}")
    assert type(loss) is DSMLoss and loss.t_min == 1e-5
    assert type(loss.weighting) is WEIGHTING_OPTIONS[weighting]
    assert type(loss.time_sampler) is SAMPLER_OPTIONS[sampler]
    if sampler == "importance":
        assert loss.time_sampler.grid_size == 20000


def test_train_defaults_to_sigma2_uniform():
    loss = _loss()
    assert type(loss.weighting) is SigmaSquaredWeighting
    assert type(loss.time_sampler) is UniformTimeSampler


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_built_from_the_groups(name):
    weighting, sampler, t_min = PRESETS[name]
    loss = _loss(f"+loss={name}", primary=None)
    assert type(loss.weighting) is weighting and type(loss.time_sampler) is sampler
    assert loss.t_min == t_min


def test_group_override_applies_on_top_of_a_preset():
    loss = _loss("loss=dsm_ones_is", "loss/weighting=likelihood")
    assert type(loss.weighting) is LikelihoodWeighting
    assert type(loss.time_sampler) is ImportanceTimeSampler and loss.t_min == 1e-3
    loss = _loss("experiment=toy2d", "loss/time_sampler=importance")
    assert type(loss.time_sampler) is ImportanceTimeSampler


def test_weighting_sweep_composes_one_run_per_option():
    """``sde-gen-train -m loss/weighting=sigma2,likelihood``: the sweep expands to one job per
    option (as Hydra's basic sweeper does) and each job composes to its weighting."""
    (sweep,) = OverridesParser.create().parse_overrides(["loss/weighting=sigma2,likelihood"])
    assert sweep.is_sweep_override() and sweep.key_or_group == "loss/weighting"
    jobs = [f"{sweep.key_or_group}={v}" for v in sweep.sweep_string_iterator()]
    assert [type(_loss(job).weighting) for job in jobs] == [
        SigmaSquaredWeighting,
        LikelihoodWeighting,
    ]


def test_unknown_option_is_named():
    with pytest.raises(MissingConfigException, match="perceptual"):
        _loss("loss/weighting=perceptual")
