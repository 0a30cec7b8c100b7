"""Sample quality on images: Fréchet distance and unbiased KID on the features of a torch module,
and samples exported as a folder of PNGs (what clean-fid and torch-fidelity read).

FD  = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^{1/2})  of Gaussians fitted to two feature sets
      (Heusel et al. 2017; with Inception features this is the FID).
KID = unbiased MMD² with the kernel k(x, y) = (xᵀy/d + 1)³, averaged over random subsets
      (Bińkowski et al. 2018); its standard error is that of the subset mean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import Tensor, nn

from sde_gen.runtime.files import DiskFullError, disk_full_error

__all__ = ["feature_vectors", "frechet_distance", "kernel_inception_distance", "export_pngs"]


@torch.no_grad()
def feature_vectors(net: nn.Module, x: Tensor, batch_size: int = 500) -> np.ndarray:
    """(N, F) float64 features: ``net.features(x)`` when the module has it, else ``net(x)``."""
    extract = getattr(net, "features", net)
    out = [extract(batch).flatten(1).double().cpu() for batch in x.split(batch_size)]
    return torch.cat(out).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussians fitted to feature sets a (N, F) and b (M, F)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(
            f"need two (N >= 2, F) feature sets of one width, got {a.shape}, {b.shape}"
        )
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(w.clip(min=0))) @ v.T
    # tr (Σ_a Σ_b)^{1/2} = Σ √eig(Σ_a^{1/2} Σ_b Σ_a^{1/2}): symmetric PSD, stable when singular
    tr_root = np.sqrt(linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clip(min=0)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_root)


def _mmd2_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    d = a.shape[1]
    k_aa, k_bb, k_ab = ((a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3)
    m, n = len(a), len(b)
    return float(
        (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
        + (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
        - 2 * k_ab.mean()
    )


def kernel_inception_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = 50, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """(KID, its standard error): the unbiased cubic-kernel MMD² averaged over ``subsets`` random
    subsets of min(``subset_size``, N, M) points of each set. Unbiased: E[KID] = 0 when a and b
    come from one distribution, so it may be negative."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (N, F) feature sets of one width, got {a.shape}, {b.shape}")
    size = min(subset_size, len(a), len(b))
    if size < 2 or subsets < 1:
        raise ValueError(f"need subsets >= 1 of >= 2 points, got {subsets} of {size}")
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            _mmd2_unbiased(a[rng.choice(len(a), size, replace=False)],
                           b[rng.choice(len(b), size, replace=False)])
            for _ in range(subsets)
        ]
    )  # fmt: skip
    se = float(values.std(ddof=1) / np.sqrt(subsets)) if subsets > 1 else float("nan")
    return float(values.mean()), se


def export_pngs(x: Tensor, folder: str | Path, start: int = 0) -> list[Path]:
    """Images x in [−1, 1], shape (N, C, H, W) with C = 1 or 3, as 8-bit PNGs
    ``folder/{start + i:06d}.png`` (levels round((x + 1)·127.5)); returns the paths. A failed
    write removes the PNGs this call wrote (no partial export is left to be taken for a whole
    one); a full disk is a ``DiskFullError`` naming the file."""
    from PIL import Image

    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"export_pngs needs (N, 1 or 3, H, W) images, got {tuple(x.shape)}")
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    levels = ((x.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    paths: list[Path] = []
    for i, img in enumerate(levels):
        path = folder / f"{start + i:06d}.png"
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        try:
            Image.fromarray(arr).save(path)
        except BaseException as e:
            _remove_export([*paths, path], folder if created else None)
            error = disk_full_error(path, e)
            if error is e:
                raise
            raise DiskFullError(
                f"{error}; PNG {i + 1} of {len(levels)}: the {len(paths)} written before were "
                "removed, the export is not partial"
            ) from e
        paths.append(path)
    return paths


def _remove_export(paths: list[Path], folder: Path | None) -> None:
    """Delete ``paths`` and, when the export created it and it is now empty, ``folder``."""
    for p in paths:
        p.unlink(missing_ok=True)
    if folder is not None and not any(folder.iterdir()):
        folder.rmdir()
