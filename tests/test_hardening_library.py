"""Bad input files of the second hardening round (issue 23), through the real calls: a fitted
grid file given to ``sde-gen-sample``, the summaries ``sde-gen-collect`` reads. Each is refused
fast with a ValueError naming the file (and key), or, in a sweep's table, left out with a warning
naming it; nothing on disk is lost."""

from __future__ import annotations

import csv
import logging
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from test_bad_inputs_runs import _assert_nothing_lost, _snapshot
from test_solvers_contract import CONFIGS as SOLVER_CONFIGS

from sde_gen import runtime
from sde_gen.cli.summaries import collect
from sde_gen.sample import run_sampling

GRID_TIMES = "times: [1.0, 0.5, 0.001]\n"


def _sample_with_grid(path: Path, out: Path):
    overrides = ["data=ring", "sde=vp", "solver=ddim", "solver.steps=2", "solver/grid=fitted",
                 f"solver.grid.path={path}", "n=8", "plot=false", "progress=false"]  # fmt: skip
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("sample", overrides=overrides)
    return run_sampling(cfg, out)


def _alias_bomb(levels: int = 9) -> str:
    """The billion laughs: 9 levels of 9 aliases each, 9**9 strings once expanded."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 9)}]" for k in range(1, levels)]
    return "\n".join(lines) + "\n" + GRID_TIMES


GRID_FILES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "alias_bomb": (_alias_bomb().encode(), ("anchors or aliases",)),
    "a_string": (b"just a string\n", ("holds a str", "times")),
    "binary_bytes": (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", ("not UTF-8 text", "byte 0x89 at 0")),
    "a_time_that_is_text": (b"times: [1.0, abc, 0.001]\n", ("times[1]='abc'", "not a number")),
    "ending_below_zero": (b"times: [1.0, 0.5, -0.1]\n", ("-0.1 < 0", "t_min")),
    "broken_yaml": (b"times: [1.0, 0.5\n", ("not valid YAML",)),
}


@pytest.mark.parametrize("name", sorted(GRID_FILES))
def test_a_bad_fitted_grid_file_is_named_fast(name, tmp_path):
    data, named = GRID_FILES[name]
    path = tmp_path / "grid.yaml"
    path.write_bytes(data)
    before = _snapshot(tmp_path)
    start = time.perf_counter()
    with pytest.raises(ValueError) as err:
        _sample_with_grid(path, tmp_path / "out")
    assert time.perf_counter() - start < 5.0  # the config dominates; the bomb took minutes
    message = str(err.value)
    assert "\n" not in message and f"'{path}'" in message, message
    for text in named:
        assert text in message, message
    assert not (tmp_path / "out" / "summary.json").exists()
    _assert_nothing_lost(tmp_path, before)


def test_a_plain_fitted_grid_file_still_samples(tmp_path):
    """The same call with a good file: the solver runs on exactly its times (NFE = steps)."""
    path = tmp_path / "grid.yaml"
    path.write_text(GRID_TIMES + "solver: DDIM\n")
    summary = _sample_with_grid(path, tmp_path / "out")
    assert summary["nfe"] == 2 and summary["finite"]


# -- sde-gen-collect: every bad summary is left out with a warning naming it ---------------------
BAD_SUMMARIES: dict[str, tuple[object, str]] = {
    "truncated_json": (b'{"nfe": 3, "mmd2": ', "not valid JSON"),
    "nan_metric": (b'{"solver": "ddim", "nfe": 3, "mmd2": NaN}', "mmd2=NaN"),
    "nan_nfe": (b'{"solver": "ddim", "nfe": NaN, "mmd2": 0.1}', "nfe=NaN"),
    "inf_in_a_list": (b'{"nfe": 3, "grid_times": [1.0, Infinity]}', "grid_times[1]=NaN/inf"),
    "a_list": (b"[1, 2, 3]", "holds a list"),
    "binary_bytes": (b"\xff\xfe\x00{", "not UTF-8 text"),
    "an_endless_device": ("/dev/zero", "not a regular file"),
    "a_fifo": ("fifo", "not a regular file"),
    "too_large": (b'{"nfe": 3, "pad": "' + b"x" * 2**21 + b'"}', "larger than"),
}


def _bad_summary(run: Path, content: object) -> Path:
    path = run / "summary.json"
    if content == "fifo":
        os.mkfifo(path)
    elif isinstance(content, str):
        path.symlink_to(content)
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("name", sorted(BAD_SUMMARIES))
def test_collect_leaves_out_a_bad_summary_with_a_warning_naming_it(name, tmp_path, caplog):
    content, reason = BAD_SUMMARIES[name]
    sweep = tmp_path / "sweep"
    for job, (nfe, mmd2) in enumerate([(2, 0.4), (4, 0.1)]):
        (sweep / str(job)).mkdir(parents=True)
        runtime.write_summary(sweep / str(job), {"solver": "ddim", "nfe": nfe, "mmd2": mmd2})
    (sweep / "2").mkdir()
    bad = _bad_summary(sweep / "2", content)
    before = _snapshot(sweep / "0")
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="sde_gen.cli.summaries"):
        written = collect(sweep)
    assert time.perf_counter() - start < 10.0  # a link to /dev/zero used to hang
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and f"'{bad}'" in warned[0] and reason in warned[0], warned
    with open(written["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["run"], int(r["nfe"]), float(r["mmd2"])) for r in rows] == [
        ("0", 2, 0.4),
        ("1", 4, 0.1),
    ]
    _assert_nothing_lost(sweep / "0", before)


def test_collect_with_only_bad_summaries_names_how_many_were_left_out(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "summary.json").write_text('{"nfe": NaN}')
    with pytest.raises(
        ValueError, match=r"no summary\.json below .* \(1 unreadable, left out: .*nfe=NaN"
    ):
        collect(tmp_path)
    assert not (tmp_path / "summaries.csv").exists()


# -- image folders: a decompression bomb and a PNG cut short are named -------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, rows: list[bytes], interlace: int = 0) -> bytes:
    """An 8-bit grey PNG of ``width`` × ``height`` whose filtered image data are ``rows``."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, interlace)
    deflate = zlib.compressobj(9)
    data = b"".join(deflate.compress(row) for row in rows) + deflate.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def _image_folder(tmp_path: Path, bad: bytes) -> Path:
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(np.full((16, 16), 40 * k, np.uint8)).save(folder / f"good_{k}.png")
    (folder / "bad.png").write_bytes(bad)
    return folder


def test_a_png_holding_4_of_its_16_rows_is_named(tmp_path):
    """Pillow fills the missing 12 rows with black without a word; ImageFolder refuses it."""
    from sde_gen.data import ImageFolder

    rows = [b"\x00" + bytes([200] * 16) for _ in range(4)]
    folder = _image_folder(tmp_path, _png(16, 16, rows))
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        ImageFolder(str(folder), size=16, channels=1, test_fraction=0.25)
    message = str(err.value)
    assert f"'{folder / 'bad.png'}'" in message and "truncated" in message, message
    assert "204 bytes of its rows are missing" in message, message  # 12 rows of 1 + 16 bytes
    _assert_nothing_lost(tmp_path, before)


def test_a_20000_by_20000_png_is_refused_by_the_bomb_check_naming_it(tmp_path):
    from sde_gen.data import ImageFolder

    row = b"\x00" * 20001  # the header's size is what Pillow checks, before any row
    folder = _image_folder(tmp_path, _png(20000, 20000, [row]))
    start = time.perf_counter()
    with pytest.raises(ValueError) as err:
        ImageFolder(str(folder), size=16, channels=1, test_fraction=0.25)
    assert time.perf_counter() - start < 5.0
    message = str(err.value)
    assert f"'{folder / 'bad.png'}'" in message and "400000000 pixels" in message, message
    assert "decompression bomb" in message, message


def test_the_row_count_agrees_with_pillow_on_whole_pngs(tmp_path):
    """Whole PNGs lack nothing: Pillow's own RGBA and palette files, and an Adam7-interlaced file
    built by hand (seven passes of a 7 × 5 image) that Pillow decodes to the original pixels."""
    from PIL import Image

    from sde_gen.data.png_rows import ADAM7, png_missing_bytes

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (9, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgba[..., 0], "L").convert("P").save(tmp_path / "p.png")
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rows = [b"\x00" + grey[y0::dy, x0::dx][r].tobytes()
            for x0, y0, dx, dy in ADAM7 if grey[y0::dy, x0::dx].size
            for r in range(grey[y0::dy, x0::dx].shape[0])]  # fmt: skip
    (tmp_path / "adam7.png").write_bytes(_png(7, 5, rows, interlace=1))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "adam7.png")), grey)
    for name in ("rgba.png", "p.png", "adam7.png"):
        assert png_missing_bytes(tmp_path / name) == 0, name
    (tmp_path / "adam7_cut.png").write_bytes(_png(7, 5, rows[:-1], interlace=1))
    assert png_missing_bytes(tmp_path / "adam7_cut.png") == 1 + 7  # pass 7's last row


# -- sde-gen-fit-grid: a stochastic solver has no grid error to fit ------------------------------
@pytest.mark.parametrize("solver", ["euler_maruyama", "ancestral"])
def test_fit_grid_refuses_a_stochastic_solver_naming_it(solver, tmp_path):
    """Its end points differ from the deterministic teacher's by its noise: a grid fitted to
    that is meaningless, and none is written."""
    from sde_gen.cli.settings import register_fit_grid_config
    from sde_gen.fit_grid import run_fit

    register_fit_grid_config()
    over = ["data=ring", f"solver={solver}", "solver.steps=3", "n=8", "maxiter=2"]
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("fit_grid", overrides=over)
    with pytest.raises(ValueError) as err:
        run_fit(cfg, tmp_path / "run")
    message = str(err.value)
    assert message.startswith("solver=") and "is stochastic" in message, message
    assert not (tmp_path / "run").exists()


def test_a_solver_cache_dir_that_is_a_file_is_named_before_the_calibration(tmp_path, monkeypatch):
    """``solver.cache_dir=<a file>``: an UnwritableError naming the key and the file before the
    Monte Carlo estimate (which the failed save used to throw away); the file is untouched."""
    from sde_gen.runtime.files import UnwritableError
    from sde_gen.solvers import calibration

    def no_estimate(*args, **kwargs):
        raise AssertionError("estimated before the cache folder was checked")

    monkeypatch.setattr(calibration, "estimate_ms_eps", no_estimate)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    before = _snapshot(tmp_path)
    over = ["data=ring", "solver=analytic_dpm", "solver.steps=3", f"solver.cache_dir={afile}",
            "n=8", "plot=false", "progress=false"]  # fmt: skip
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("sample", overrides=over)
    with pytest.raises(UnwritableError) as err:
        run_sampling(cfg, tmp_path / "out")
    assert f"solver.cache_dir '{afile}' is a file" in str(err.value), str(err.value)
    assert not (tmp_path / "out").exists()
    _assert_nothing_lost(tmp_path, before)


# -- a moved data set: the hint names the run's own data option ----------------------------------
@pytest.mark.parametrize(
    ("target", "option"),
    [("sde_gen.data.ImageFolder", "image_folder"), ("sde_gen.data.NpzImages", "npz")],
)
def test_the_missing_data_hint_names_the_runs_own_data_option(target, option, tmp_path):
    """An image-folder run whose folder moved was told ``data=npz``; now its own option."""
    from test_bad_inputs_library import MLP_CFG, VP, _craft

    from sde_gen.evaluate import run_evaluation

    gone = tmp_path / "gone"
    data = {"_target_": target, "path": str(gone)}
    config = {"sde": VP, "data": data, "model": MLP_CFG}
    ckpt = _craft(tmp_path / "step_00000001.pt", config, shape=(1, 6, 6))
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("eval", overrides=[f"checkpoint={ckpt}", "n=4", "progress=false"])
    with pytest.raises(ValueError) as err:
        run_evaluation(cfg, tmp_path / "out")
    message = str(err.value)
    assert f"'{gone}' does not exist" in message, message
    assert f"data={option} data.path=<its new location>" in message, message
    assert not (tmp_path / "out").exists()


# -- unbounded sizes: the parameters are counted before any allocation ---------------------------
def test_a_huge_model_is_refused_before_allocation_naming_the_key(tmp_path):
    """``model.hidden=1000000``: 7·10¹² parameters counted on the meta device, refused in
    seconds naming the key (torch's allocator failed on 4 TB before); no run folder."""
    from test_bad_inputs_runs import TINY_TRAIN

    from sde_gen.train import run as train_run

    over = [*TINY_TRAIN, "model.hidden=1000000", "model.num_layers=3", "device=cpu"]
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("train", overrides=over)
    start = time.perf_counter()
    with pytest.raises(ValueError) as err:
        train_run(cfg, tmp_path / "new", progress=False)
    assert time.perf_counter() - start < 10.0
    message = str(err.value)
    assert "model has 7,000,0" in message and "parameters" in message, message  # ≈ 7 h²
    assert "model.hidden=1000000" in message and "of cpu" in message, message
    assert not (tmp_path / "new").exists()


def test_the_meta_count_is_the_built_networks_count():
    """What the preflight counts without memory is exactly what the built network holds."""
    from omegaconf import OmegaConf

    from sde_gen.runtime.instantiate import check_parameter_memory, instantiate_group

    node = OmegaConf.create({"_target_": "sde_gen.models.MLP", "hidden": 24, "num_layers": 3})
    built = instantiate_group("model", node, shape=(2,))
    counted = check_parameter_memory("model", node, torch.device("cpu"), 5, shape=(2,))
    assert counted == sum(p.numel() for p in built.parameters()) > 24 * 24 * 2


def test_a_checkpoint_storing_a_huge_model_is_refused_before_allocation(tmp_path):
    from test_bad_inputs_library import RING, VP, _craft

    model = {"_target_": "sde_gen.models.MLP", "hidden": 1000000, "num_layers": 1}
    ckpt = _craft(tmp_path / "step_00000001.pt", {"sde": VP, "data": RING, "model": model})
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("sample", overrides=[f"checkpoint={ckpt}", "n=4", "progress=false"])
    with pytest.raises(ValueError) as err:
        run_sampling(cfg, tmp_path / "out")
    message = str(err.value)
    assert f"checkpoint '{ckpt}'" in message and "model.hidden=1000000" in message, message
    assert "parameters" in message and "of cpu" in message, message
    assert not (tmp_path / "out").exists()


def test_sampling_a_checkpoint_never_reads_its_training_data(tmp_path, monkeypatch):
    """A stored ``data.path=/usr`` image folder made sde-gen-sample walk /usr decoding images;
    the shape is in the checkpoint, so sampling reads no data, and a draw (a calibration) does."""
    from test_bad_inputs_library import MLP_CFG, VP, _craft

    from sde_gen.data import ImageFolder

    def read(self, *args, **kwargs):
        raise AssertionError("the training data were read")

    monkeypatch.setattr(ImageFolder, "__init__", read)
    data = {"_target_": "sde_gen.data.ImageFolder", "path": "/usr", "size": 6, "channels": 1}
    info = {"shape": [1, 6, 6], "num_bins": 256}
    config = {"sde": VP, "data": data, "model": MLP_CFG}
    ckpt = _craft(tmp_path / "step_00000001.pt", config, shape=(1, 6, 6), data_info=info)
    common = [f"checkpoint={ckpt}", "n=4", "solver.steps=2", "progress=false"]
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("sample", overrides=common)
        calibrated = compose("sample", overrides=[*common, "solver=analytic_dpm"])
    summary = run_sampling(cfg, tmp_path / "out", data_chosen=False)
    assert summary["data_shape"] == [1, 6, 6] and summary["finite"]
    assert np.load(tmp_path / "out" / "samples.npz")["x0"].shape == (4, 1, 6, 6)
    with pytest.raises(ValueError, match="the training data were read"):  # Hydra wraps it
        run_sampling(calibrated, tmp_path / "calibrated", data_chosen=False)


# -- a meta tensor into a solver ------------------------------------------------------------------
@pytest.mark.parametrize("name", SOLVER_CONFIGS)
def test_a_meta_tensor_into_any_solver_is_named(name):
    """Every solver config: x_T on device='meta' is a ValueError naming it (it died inside torch,
    ``Tensor.item()`` on a meta tensor), before any score evaluation."""
    from test_solvers_contract import data, load

    from sde_gen.sde import VPSDE

    def score_fn(x, t):
        raise AssertionError("the score was evaluated")

    solver = load(name, steps=3)
    if getattr(solver, "needs_data", False):
        solver.calibrate(VPSDE(), data().score_fn(VPSDE()), data().sample)
    x_T = torch.empty((4, 2), device="meta")
    with pytest.raises(ValueError, match=r"x_T is on device='meta'"):
        solver(VPSDE(), score_fn, x_T, generator=torch.Generator().manual_seed(0))
