"""Small command-line facts of issue 24: the unknown-key error states the fact instead of Hydra's
``+key=`` advice, the demo writes under outputs/, the U-Net's attention error names the key."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from sde_gen.cli.errors import one_line
from sde_gen.models import UNet


def test_unknown_key_error_does_not_advise_plus():
    text = "Could not override 'trainer.stepz'. To append to your config use +trainer.stepz=10: x"
    assert one_line(ConfigCompositionException(text)) == (
        "unknown key 'trainer.stepz' (keys: --cfg job): x"
    )
    text = "Could not override 'solver.steps'. To append to your config use +solver.steps=10: y"
    line = one_line(ConfigCompositionException(text))
    assert "+solver.steps" not in line and "sde-gen-sample's steps=N" in line


def test_attention_resolution_error_names_the_key_and_the_choices():
    with pytest.raises(ValueError) as e:
        UNet((1, 8, 8), base_channels=8, channel_mult=(1, 2, 2), attn_resolutions=[16])
    assert str(e.value) == (
        "attn_resolutions [16] not among the U-Net's resolutions [2, 4, 8] of 8x8 images: "
        "set model.attn_resolutions to some of them (or [])"
    )


@pytest.mark.parametrize(
    "name, shape",
    [
        ("unet_digits", (1, 8, 8)),
        ("unet_digits_fourier", (1, 8, 8)),
        ("unet32_small", (3, 32, 32)),
        ("unet32", (3, 32, 32)),
        ("unet64", (3, 64, 64)),
    ],
)
def test_unet_configs_state_their_parameter_count(name, shape):
    """The 'Cost: <P> M parameters' line of each U-Net config is the built network's count,
    to the digits it states."""
    import re
    from importlib.resources import files

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    text = files("sde_gen.conf").joinpath("model", f"{name}.yaml").read_text()
    stated = re.search(r"# Cost: ([\d.]+) M parameters", text).group(1)
    from sde_gen.networks.wrap import network_node

    node = OmegaConf.create(text)
    net = instantiate(network_node({k: v for k, v in node.items() if k != "defaults"}), shape=shape)
    count = sum(p.numel() for p in net.parameters() if p.requires_grad)
    decimals = len(stated.partition(".")[2])
    assert round(count / 1e6, decimals) == float(stated)


def _run_module(module: str, *args: str, cwd) -> str:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_demo_writes_its_figure_under_outputs(tmp_path):
    out = _run_module("sde_gen.demo", "n=50", "times=[0,1]", cwd=tmp_path)
    assert (tmp_path / "outputs" / "demo" / "demo_forward.png").is_file()
    assert "outputs/demo/demo_forward.png" in out


def test_python_m_logs_under_the_module_name(tmp_path):
    """``python -m sde_gen.sample`` (as ``torchrun -m`` starts it) logs as sde_gen.sample, not
    __main__."""
    out = _run_module(
        "sde_gen.sample",
        "n=8",
        "solver=ddim",
        "solver.steps=2",
        "plot=false",
        "progress=false",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert "[sde_gen.sample][INFO] - solver=ddim steps=2 nfe=2" in out
    assert "__main__" not in out
