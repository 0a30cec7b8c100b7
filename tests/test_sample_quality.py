"""Fréchet distance and KID against closed forms and Monte Carlo error; PNG export round trip;
the shipped digits classifier's features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from sde_gen.metrics.images import (
    export_pngs,
    feature_vectors,
    frechet_distance,
    kernel_inception_distance,
)


def _gauss(n, mean, cov, seed):
    return np.random.default_rng(seed).multivariate_normal(mean, cov, size=n)


def test_frechet_distance_matches_the_gaussian_closed_form():
    """For N(μ₁, Σ₁), N(μ₂, Σ₂): FD = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^{1/2}); the estimate from
    200 000 samples each is within 1% of it."""
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, -1.0])
    a_ = np.array([[1.0, 0.3, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.5]])
    cov1, cov2 = a_ @ a_.T, np.diag([0.5, 1.5, 1.0])
    exact = float(
        ((mu1 - mu2) ** 2).sum() + np.trace(cov1 + cov2 - 2 * linalg.sqrtm(cov1 @ cov2).real)
    )
    est = frechet_distance(_gauss(200_000, mu1, cov1, 0), _gauss(200_000, mu2, cov2, 1))
    assert est == pytest.approx(exact, rel=0.01)
    same = frechet_distance(_gauss(50_000, mu1, cov1, 2), _gauss(50_000, mu1, cov1, 3))
    assert 0 <= same < 0.01


def test_kid_is_unbiased_and_detects_a_shift():
    """Same distribution: |KID| within 4 standard errors of 0 (unbiased, can be negative).
    Shifted by δ in one of d dimensions: KID > 0 by many standard errors."""
    d = 8
    a = _gauss(4000, np.zeros(d), np.eye(d), 0)
    b = _gauss(4000, np.zeros(d), np.eye(d), 1)
    kid, se = kernel_inception_distance(a, b, subsets=40, subset_size=500)
    assert abs(kid) < 4 * se
    shift = np.zeros(d)
    shift[0] = 0.5
    c = _gauss(4000, shift, np.eye(d), 2)
    kid_c, se_c = kernel_inception_distance(a, c, subsets=40, subset_size=500)
    assert kid_c > 10 * se_c


def test_kid_equals_the_unbiased_mmd_with_the_cubic_kernel():
    """One subset of all points is the plain unbiased estimator, checked by explicit sums."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) + 0.3
    k = lambda x, y: (x @ y / 3 + 1) ** 3  # noqa: E731
    bb = sum(k(b[i], b[j]) for i in range(5) for j in range(5) if i != j) / 20
    kid, _ = kernel_inception_distance(a, b, subsets=1, subset_size=5)
    aa5 = sum(k(a[i], a[j]) for i in range(5) for j in range(5) if i != j) / 20
    ab5 = sum(k(a[i], b[j]) for i in range(5) for j in range(5)) / 25
    assert kid == pytest.approx(aa5 + bb - 2 * ab5, rel=1e-12)


def test_png_export_round_trips_levels(tmp_path):
    levels = torch.randint(0, 256, (3, 3, 4, 5), generator=torch.Generator().manual_seed(0))
    x = levels.float() / 127.5 - 1
    paths = export_pngs(x, tmp_path / "png", start=10)
    assert [p.name for p in paths] == ["000010.png", "000011.png", "000012.png"]
    back = np.asarray(Image.open(paths[1]))
    assert np.array_equal(back.transpose(2, 0, 1), levels[1].numpy())
    grey = export_pngs(x[:, :1], tmp_path / "grey")
    assert np.array_equal(np.asarray(Image.open(grey[0])), levels[0, 0].numpy())
    with pytest.raises(ValueError, match="1 or 3"):
        export_pngs(torch.zeros(2, 4, 3, 3), tmp_path / "bad")


def test_shipped_digits_classifier_separates_digits_from_noise():
    from sde_gen.data import Digits
    from sde_gen.models.digits_classifier import digits_labels, pretrained_digits_classifier

    data = Digits()
    net = pretrained_digits_classifier()
    _, y_test = digits_labels(data)
    with torch.no_grad():
        acc = float((net(data.test_data).argmax(1) == y_test).float().mean())
    assert acc > 0.9
    test = feature_vectors(net, data.test_data)
    train = feature_vectors(net, data.train_data[:500])
    noise = feature_vectors(net, torch.rand(500, 1, 8, 8) * 2 - 1)
    assert test.shape == (len(data.test_data), 32)
    assert frechet_distance(noise, test) > 10 * frechet_distance(train, test)
