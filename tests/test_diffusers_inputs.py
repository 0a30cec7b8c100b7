"""``model=diffusers`` offline and on hostile folders: each case one ValueError naming the file and
key (exit status 2 and one ``error:`` line in the command lines); nothing is downloaded or
unpickled; a checkpoint's stored config reaches the loader only through the allow-list."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffusers_folders import save_model_folder, save_pipeline, tiny_unet  # noqa: E402
from hand_checkpoints import checkpoint_state  # noqa: E402

from sde_gen.networks.diffusers_folder import load_diffusers  # noqa: E402
from sde_gen.networks.guard import stored_config  # noqa: E402

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
ENV.pop("HYDRA_FULL_ERROR", None)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    return save_pipeline(tmp_path_factory.mktemp("pipe"), tiny_unet(), diffusers.DDPMScheduler())


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edit(file: Path, **changes) -> None:
    cfg = json.loads(file.read_text())
    cfg.update(changes)
    file.write_text(json.dumps(cfg))


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection is a test failure."""

    def refuse(*args, **kwargs):
        raise AssertionError("the loader tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_hub_id_names_the_id_and_says_to_download(no_network, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as err:
        load_diffusers("google/ddpm-cifar10-32")
    text = str(err.value)
    assert "'google/ddpm-cifar10-32' is not a local folder" in text
    assert "huggingface-cli download google/ddpm-cifar10-32" in text and "\n" not in text


def test_folder_without_scheduler_config(tmp_path):
    folder = tiny_unet().save_pretrained(tmp_path / "m") or tmp_path / "m"
    with pytest.raises(ValueError, match=r"scheduler_config\.json' does not exist"):
        load_diffusers(str(folder))


def test_unknown_prediction_type_names_file_and_key(pipeline, tmp_path):
    folder = _copy(pipeline, tmp_path / "p")
    _edit(folder / "scheduler" / "scheduler_config.json", prediction_type="flow")
    with pytest.raises(ValueError, match=r"scheduler_config\.json'.*prediction_type='flow'"):
        load_diffusers(str(folder))


def test_unknown_class_names(pipeline, tmp_path):
    folder = _copy(pipeline, tmp_path / "p")
    _edit(folder / "unet" / "config.json", _class_name="UNet2DConditionModel")
    with pytest.raises(ValueError, match=r"unet/config\.json'.*_class_name='UNet2DConditionModel'"):
        load_diffusers(str(folder))
    folder = _copy(pipeline, tmp_path / "q")
    _edit(folder / "scheduler" / "scheduler_config.json", _class_name="FlowMatchEulerScheduler")
    with pytest.raises(ValueError, match=r"scheduler_config\.json'.*_class_name='FlowMatch"):
        load_diffusers(str(folder))


def test_unknown_beta_schedule_and_learned_variance(pipeline, tmp_path):
    folder = _copy(pipeline, tmp_path / "p")
    sched = folder / "scheduler" / "scheduler_config.json"
    _edit(sched, beta_schedule="laplace")
    with pytest.raises(ValueError, match=r"scheduler_config\.json'.*beta_schedule='laplace'"):
        load_diffusers(str(folder))
    _edit(sched, beta_schedule="linear", variance_type="learned_range")
    with pytest.raises(ValueError, match=r"out_channels=3 does not fit in_channels=3"):
        load_diffusers(str(folder))
    _edit(sched, variance_type="learned")
    with pytest.raises(ValueError, match=r"variance_type='learned'"):
        load_diffusers(str(folder))


def test_unknown_variance_type_names_file_and_key(pipeline, tmp_path):
    """A variance_type diffusers' DDPMScheduler does not know is one line naming the file, the
    key and the values sde_gen reads; the fixed ones load with no learned-variance channels."""
    folder = _copy(pipeline, tmp_path / "p")
    sched = folder / "scheduler" / "scheduler_config.json"
    _edit(sched, variance_type="learned_log")
    with pytest.raises(ValueError) as err:
        load_diffusers(str(folder))
    text = str(err.value)
    assert "scheduler_config.json'" in text and "variance_type='learned_log'" in text
    assert "learned_range" in text and "\n" not in text
    for fixed in ("fixed_small", "fixed_large", "fixed_small_log", "fixed_large_log"):
        _edit(sched, variance_type=fixed)
        model = load_diffusers(str(folder))
        x = torch.zeros(1, 3, 8, 8)
        assert model.eps_and_extra(x, torch.full((1,), 0.5))[1] is None


def test_shape_against_data(pipeline):
    with pytest.raises(ValueError, match=r"shape \(3, 8, 8\).*data= gives \(1, 8, 8\)"):
        load_diffusers(str(pipeline), shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"shape \(3, 8, 8\).*data= gives \(3, 16, 16\)"):
        load_diffusers(str(pipeline), shape=(3, 16, 16))
    assert load_diffusers(str(pipeline), shape=(3, 8, 8)) is not None


@pytest.mark.parametrize("bad", [[1.0], [1.0, -1.0], ["a", 1], 3.0])
def test_bad_clip_x0_names_the_key(pipeline, bad):
    with pytest.raises(ValueError, match=r"model\.clip_x0="):
        load_diffusers(str(pipeline), clip_x0=bad)


def test_pickled_weights_are_refused(tmp_path):
    folder = save_model_folder(tmp_path / "m", tiny_unet(), diffusers.DDPMScheduler())
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match=r"\.bin' is a pickle.*convert it to .*safetensors"):
        load_diffusers(str(folder))


def test_weights_of_another_network_are_refused(pipeline, tmp_path):
    folder = _copy(pipeline, tmp_path / "p")
    _edit(folder / "unet" / "config.json", block_out_channels=[8, 32])
    with pytest.raises(ValueError, match=r"safetensors' does not fit .*config\.json"):
        load_diffusers(str(folder))


def test_fourier_embedding_needs_the_ve_scheduler(tmp_path):
    folder = save_pipeline(tmp_path / "p", tiny_unet(fourier=True), diffusers.DDPMScheduler())
    with pytest.raises(ValueError, match=r"time_embedding_type='fourier' does not fit"):
        load_diffusers(str(folder))


def test_stored_config_reaches_the_loader_only_through_the_allow_list():
    ok = (
        "sde: {_target_: sde_gen.sde.VPSDE}\ndata: {_target_: sde_gen.data.ring_mixture}\n"
        "model: {_target_: sde_gen.networks.diffusers_folder.load_diffusers, path: /x}\n"
    )
    cfg = stored_config(ok)
    assert cfg.model.path == "/x"
    for bad in (
        "diffusers.UNet2DModel.from_pretrained",
        "sde_gen.networks.checkpoint.load_score_model",
        "sde_gen.networks.diffusers_folder.json.loads",
    ):
        with pytest.raises(ValueError, match="model._target_"):
            stored_config(ok.replace("sde_gen.networks.diffusers_folder.load_diffusers", bad))


def _cli(cmd: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / cmd), *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=240
    )


def test_cli_errors_are_one_line_exit_2(pipeline, tmp_path):
    """A hub id and a data set of the wrong shape, through sde-gen-sample and sde-gen-eval."""
    proc = _cli(
        "sde-gen-sample", "model=diffusers", "model.path=google/ddpm-cifar10-32", cwd=tmp_path
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and "google/ddpm-cifar10-32" in proc.stderr
    np.savez(tmp_path / "gray.npz", x=np.zeros((10, 8, 8), dtype=np.uint8))
    args = ["model=diffusers", f"model.path={pipeline}", "data=npz", "data.path=gray.npz"]
    proc = _cli("sde-gen-eval", *args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert "config.json" in proc.stderr and "(1, 8, 8)" in proc.stderr


def test_train_builds_the_loaded_model_with_its_own_sde(pipeline, tmp_path):
    """sde-gen-train model=diffusers (fine-tuning): the score model is the folder's, with its
    DDPM chain replacing sde=, and the loss takes it."""
    from hydra import compose, initialize_config_module

    from sde_gen.cli.build import build_training
    from sde_gen.sde import DiscreteVPSDE

    np.savez(tmp_path / "rgb.npz", x=np.zeros((10, 3, 8, 8), dtype=np.uint8))
    overrides = [
        "model=diffusers",
        f"model.path={pipeline}",
        "data=npz",
        f"data.path={tmp_path / 'rgb.npz'}",
    ]
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    parts = build_training(cfg)
    assert isinstance(parts.sde, DiscreteVPSDE) and parts.model.sde is parts.sde
    x = torch.zeros(2, 3, 8, 8)
    unet = tiny_unet()
    with torch.no_grad():
        assert torch.equal(parts.model.eps(x, torch.full((2,), 0.5)), unet(x, 499.0).sample)
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        bad = compose("train", overrides=[*overrides[:2], "data=digits"])
    with pytest.raises(ValueError, match=r"config\.json'.*data= gives \(1, 8, 8\)"):
        build_training(bad)


def test_fine_tuned_checkpoint_loads_through_the_allow_list(pipeline, tmp_path):
    """A checkpoint written by sde-gen-train model=diffusers stores the loader's node; loading it
    rebuilds the folder's network and SDE and takes the checkpoint's weights, not the folder's."""

    from sde_gen.networks.checkpoint import load_score_model
    from sde_gen.training.checkpoint import save_checkpoint

    np.savez(tmp_path / "rgb.npz", x=np.zeros((10, 3, 8, 8), dtype=np.uint8))
    model = load_diffusers(str(pipeline))
    with torch.no_grad():
        model.eps_net.unet.conv_out.bias.add_(0.5)  # "fine-tuned"
    node = {"_target_": "sde_gen.networks.diffusers_folder.load_diffusers", "path": str(pipeline)}
    config = {
        "sde": {"_target_": "sde_gen.sde.VPSDE"},
        "data": {"_target_": "sde_gen.data.NpzImages", "path": str(tmp_path / "rgb.npz")},
        "model": {**node, "clip_x0": None},
    }
    path = save_checkpoint(tmp_path / "step_00000001.pt", checkpoint_state(model, config, step=1))
    loaded, _, data = load_score_model(path)
    x, t = torch.zeros(2, 3, 8, 8), torch.full((2,), 0.5)
    with torch.no_grad():
        assert torch.equal(loaded.eps(x, t), model.eps(x, t))
        assert not torch.equal(loaded.eps(x, t), load_diffusers(str(pipeline)).eps(x, t))
    assert type(loaded.sde).__name__ == "DiscreteVPSDE" and tuple(data.shape) == (3, 8, 8)


def test_model_and_checkpoint_together_is_an_error(pipeline):
    from hydra import compose, initialize_config_module

    from sde_gen.networks.source import load_score_source

    overrides = ["model=diffusers", f"model.path={pipeline}", "checkpoint=x.pt"]
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("sample", overrides=overrides)
    with pytest.raises(ValueError, match="checkpoint=<path> or model=<name>, not both"):
        load_score_source(cfg, torch.device("cpu"))
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("sample", overrides=["model=mlp"])
    with pytest.raises(ValueError, match="model=sde_gen.models.MLP is a network to train"):
        load_score_source(cfg, torch.device("cpu"))
