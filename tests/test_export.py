"""``model=diffusers_unet`` and ``sde-gen-export``: a U-Net trained a few steps on digits,
exported, sampled by diffusers' own DDIM loop, equals sde_gen's DDIM on the checkpoint; what has
no diffusers equivalent is refused naming the key; the folder is written whole or not at all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch import nn

from sde_gen.cli.settings import register_export_config
from sde_gen.export import run_export
from sde_gen.models.diffusers_unet import DiffusersUNet
from sde_gen.models.learned_variance import Direct, LinearRange, SigmoidRange
from sde_gen.models.network_time import DiscreteIndex, Sigma
from sde_gen.models.parametrisation import EDM, Eps, Score
from sde_gen.models.score_model import ScoreModel
from sde_gen.networks.checkpoint import load_score_model
from sde_gen.networks.diffusers_folder import load_diffusers
from sde_gen.networks.export import export_diffusers
from sde_gen.sde import VPSDE, DiscreteVPSDE
from sde_gen.sde.ddpm import linear_betas
from sde_gen.solvers import DDIM
from sde_gen.solvers.grids import TrailingGrid
from sde_gen.train import run

diffusers = pytest.importorskip("diffusers")

from diffusers_folders import linspace_ancestral  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "experiment=digits",
    "model=diffusers_unet",
    "model.block_out_channels=[16,32]",
    "sde=ddpm_linear",
    "trainer.steps=3",
    "trainer.batch_size=16",
    "trainer.warmup_steps=1",
    "trainer.lr=1e-2",  # a few large steps: weights far from their zero-initialised output layer
    "trainer.sample_every=null",
    "trainer.checkpoint_every=3",
    "trainer.sample_count=4",
    "trainer.progress=false",
    "solver.steps=2",
]


def train(folder: Path, *overrides: str) -> Path:
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, *overrides])
    return Path(run(cfg, folder, progress=False)["checkpoint"])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One tiny run per parametrisation diffusers knows (ε, v, x0)."""
    root = tmp_path_factory.mktemp("runs")
    return {p: train(root / p, f"model/param={p}") for p in ("eps", "v", "x0")}


def export_cfg(checkpoint: Path, out: Path):
    register_export_config()
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        return compose("export", overrides=[f"checkpoint={checkpoint}", f"out={out}"])


def diffusers_ddim(folder: Path, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    """diffusers' DDIMPipeline parts on the exported folder, η = 0 (its own scheduler loop)."""
    pipe = diffusers.DDIMPipeline.from_pretrained(folder)
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps)
    x = x_T.clone()
    with torch.no_grad():
        for k in scheduler.timesteps:
            x = scheduler.step(pipe.unet(x, k).sample, k, x, eta=0.0).prev_sample
    return x


@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("param", ["eps", "v", "x0"])
def test_exported_folder_samples_like_sde_gen_ddim(checkpoints, tmp_path, param, steps):
    """Same x_T: diffusers' DDIM (trailing spacing, no clipping) on the export equals
    ``solver=ddim solver/grid=trailing`` on the checkpoint to 1e-5, and the samples move."""
    out = run_export(export_cfg(checkpoints[param], tmp_path / "unet_folder"))
    config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    expected = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}[param]
    assert config["prediction_type"] == expected and config["clip_sample"] is False
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    model, _, _ = load_score_model(checkpoints[param])
    assert torch.equal(torch.tensor(config["trained_betas"], dtype=torch.float64), model.sde.betas)
    x_T = model.sde.prior_sample((4, 1, 8, 8), torch.Generator().manual_seed(0))
    ref = diffusers_ddim(out, x_T, steps)
    with torch.no_grad():
        ours = DDIM(steps=steps, grid=TrailingGrid())(model.sde, model, x_T).x0
    assert (ref - x_T).abs().max() > 0.1
    assert (ours - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())


SMALL = {
    "block_out_channels": (16, 32),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
}


def unet(learn_variance: bool = False) -> DiffusersUNet:
    return DiffusersUNet((1, 8, 8), learn_variance, **SMALL)


CHAIN = DiscreteVPSDE(linear_betas(1000))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: ScoreModel(nn.Linear(2, 2), CHAIN),
            r"Linear, not a diffusers model: export needs",
        ),
        (
            lambda: ScoreModel(unet(), VPSDE(), time=DiscreteIndex(1000, 1)),
            r"sde=VPSDE.* has no diffusers scheduler equivalent",
        ),
        (
            lambda: ScoreModel(unet(), CHAIN, EDM(), DiscreteIndex(1000, 1)),
            r"model\.param=EDM\(sigma_data=0\.5\) has no diffusers prediction_type",
        ),
        (
            lambda: ScoreModel(unet(), CHAIN, Score(), DiscreteIndex(1000, 1)),
            r"model\.param=Score\(\) has no diffusers prediction_type",
        ),
        (
            lambda: ScoreModel(unet(), CHAIN, Eps(), Sigma()),
            r"model\.time=Sigma\(\): diffusers' U-Net",
        ),
        (
            lambda: ScoreModel(unet(), CHAIN, Eps(), DiscreteIndex(1000, 0)),
            r"model\.time=DiscreteIndex\(steps=1000, offset=0\.0\)",
        ),
        (
            lambda: ScoreModel(unet(True), CHAIN, Eps(), DiscreteIndex(1000, 1)),
            r"model\.learn_variance=true",
        ),
    ],
)
def test_export_refuses_what_diffusers_has_no_name_for(build, message, tmp_path):
    """One line naming the key; nothing written (not even the temporary folder)."""
    with pytest.raises(ValueError, match=message):
        export_diffusers(build(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("variance", "name"), [(LinearRange(), "learned_range"), (Direct(), "learned")]
)
def test_learned_variance_exports_its_variance_type(tmp_path, variance, name):
    """learn_variance=true with model/variance=linear_range (direct) exports as a DDPMPipeline
    whose DDPMScheduler has variance_type learned_range (learned); loaded back with
    model=diffusers it has the same convention and the same 2C outputs exactly; for
    learned_range diffusers' DDPMScheduler loop on the export equals sde_gen's learned-variance
    ancestral sampling on the model, 10 steps, same noise, 1e-5 relative."""
    torch.manual_seed(0)
    model = ScoreModel(unet(True), CHAIN, Eps(), DiscreteIndex(1000, 1), variance).double()
    out = export_diffusers(model, tmp_path / "out")
    config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "DDPMScheduler" and config["variance_type"] == name
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    loaded = load_diffusers(str(out)).double()
    assert type(loaded.variance) is type(variance)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0.05, 0.5, 1.0], dtype=torch.float64)
    with torch.no_grad():
        ours, theirs = model.eps_net(x, 1000 * t - 1), loaded.eps_net(x, 1000 * t - 1)
    assert ours.shape == (3, 2, 8, 8) and torch.equal(ours, theirs)
    if name != "learned_range":
        return
    pipe = diffusers.DDPMPipeline.from_pretrained(out)
    scheduler, net = pipe.scheduler, pipe.unet.double()
    scheduler.set_timesteps(10)
    generator = torch.Generator().manual_seed(2)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = x_T.clone()
    with torch.no_grad():
        for k in scheduler.timesteps:
            ref = scheduler.step(net(ref, k).sample, k, ref, generator=generator).prev_sample
        solver = linspace_ancestral(scheduler, 10)
        mine = solver(model.sde, model, x_T, generator=torch.Generator().manual_seed(2)).x0
    assert (ref - x_T).abs().max() > 0.1
    assert (mine - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_sigmoid_range_variance_is_refused_naming_the_convention(tmp_path):
    """sde_gen's own sigmoid_range has no diffusers variance_type: one line naming it."""
    model = ScoreModel(unet(True), CHAIN, Eps(), DiscreteIndex(1000, 1), SigmoidRange())
    with pytest.raises(ValueError, match=r"model\.variance=SigmoidRange\(\) has no diffusers"):
        export_diffusers(model, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_used_folder_and_replaces_an_empty_one(checkpoints, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"out=.*used' exists and is not an empty folder"):
        run_export(export_cfg(checkpoints["eps"], used))
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    out = run_export(export_cfg(checkpoints["eps"], empty))
    assert sorted(p.name for p in out.iterdir()) == ["model_index.json", "scheduler", "unet"]


def test_export_command_line_is_one_line_errors_and_exit_2(checkpoints, tmp_path):
    """``python -m sde_gen.export``: a missing key is one line and status 2; a good call writes
    the folder and no run folder."""

    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "sde_gen.export", *args]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    missing = cli(f"checkpoint={checkpoints['eps']}")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("error: ") and "out" in missing.stderr
    good = cli(f"checkpoint={checkpoints['eps']}", "out=folder")
    assert good.returncode == 0, good.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
    assert OmegaConf.create((tmp_path / "folder" / "model_index.json").read_text())["unet"]


def test_fine_tune_a_loaded_folder_then_export_it_again(checkpoints, tmp_path):
    """``sde-gen-train model=diffusers model.path=<export> loss/weighting=likelihood``
    continues from the folder's weights (2 Adam steps of lr 1e-4 move them by < 1e-3, a fresh
    network would differ by O(0.1)); the result exports again and diffusers' DDIM on it equals
    sde_gen's DDIM on the fine-tuned checkpoint."""
    first = run_export(export_cfg(checkpoints["eps"], tmp_path / "first"))
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=digits",
                "model=diffusers",
                f"model.path={first}",
                "loss/weighting=likelihood",
                "trainer.steps=2",
                "trainer.batch_size=16",
                "trainer.lr=1e-4",
                "trainer.weight_decay=0",
                "trainer.warmup_steps=1",
                "trainer.sample_every=null",
                "trainer.checkpoint_every=2",
                "trainer.sample_count=4",
                "solver.steps=2",
            ],
        )
    tuned = Path(run(cfg, tmp_path / "tune", progress=False)["checkpoint"])
    before = diffusers.UNet2DModel.from_pretrained(first / "unet").state_dict()
    model, _, _ = load_score_model(tuned, ema=False)
    after = model.eps_net.unet.state_dict()
    moved = max((after[k] - before[k]).abs().max().item() for k in before)
    assert 0 < moved < 1e-3
    again = run_export(export_cfg(tuned, tmp_path / "again"))
    model, _, _ = load_score_model(tuned)
    x_T = model.sde.prior_sample((4, 1, 8, 8), torch.Generator().manual_seed(0))
    ref = diffusers_ddim(again, x_T, 10)
    with torch.no_grad():
        ours = DDIM(steps=10, grid=TrailingGrid())(model.sde, model, x_T).x0
    assert (ours - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_exported_folder_has_the_checkpoints_bits_per_dim(checkpoints, tmp_path):
    """The same network through ``model=diffusers`` (the exported folder) and through the
    checkpoint: the same scores (1e-5) and the same PF-ODE bits/dim on digits (Hutchinson with
    the same probes and dequantization, RK45 at 1e-3; equal to 1e-4 bits)."""
    from sde_gen.likelihood.ode import bits_per_dim
    from sde_gen.networks.diffusers_folder import load_diffusers

    out = run_export(export_cfg(checkpoints["v"], tmp_path / "v"))
    ours, _, data = load_score_model(checkpoints["v"])
    theirs = load_diffusers(str(out))
    x = data.split("test", 2)
    t = torch.tensor([1e-3, 0.7])
    with torch.no_grad():
        a, b = ours(x, t), theirs(x, t)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())

    def bpd(model) -> float:
        g = torch.Generator().manual_seed(0)
        value = bits_per_dim(model.sde, model, x, 17, generator=g, rtol=1e-3, atol=1e-3)[0]
        return value.mean().item()

    assert type(theirs.param).__name__ == "V"
    assert abs(bpd(ours) - bpd(theirs)) < 1e-4
