"""A small CNN classifier of scikit-learn's 8×8 digits whose penultimate layer is the feature
space of the digits' Fréchet distance and KID (``sde_gen.metrics.images``).

Its weights ship with the package (``digits_classifier.pt``, about 70 KB), made by
``python experiments/train_digits_classifier.py`` from the digits training split; nothing is
downloaded. Any other torch module with a ``features(x) -> (N, F)`` method (or returning (N, F)
from ``forward``) can take its place through the ``features`` config group.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import torch
from torch import Tensor, nn

from sde_gen.data.images import Digits

__all__ = [
    "DigitsClassifier",
    "digits_labels",
    "fit_digits_classifier",
    "pretrained_digits_classifier",
    "WEIGHTS",
]

WEIGHTS = "digits_classifier.pt"


class DigitsClassifier(nn.Module):
    """Two 3×3 convolutions, 2×2 average pooling and a ``width``-d ReLU layer (the features)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32 * 16, width), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(width, 10)

    def features(self, x: Tensor) -> Tensor:
        """The ``width``-d penultimate activations of images x in [−1, 1], shape (N, 1, 8, 8)."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def digits_labels(data: Digits) -> tuple[Tensor, Tensor]:
    """Labels of ``data``'s train and test splits (the permutation of ``TensorData``, checked)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    perm = torch.randperm(len(raw.target), generator=torch.Generator().manual_seed(1234))
    n_test = len(data.test_data)
    images = torch.as_tensor(2.0 * raw.images[:, None] / 16 - 1, dtype=torch.float32)
    if not torch.equal(images[perm[:n_test]], data.test_data):
        raise ValueError("cannot reproduce the digits test split: TensorData's permutation changed")
    y = torch.as_tensor(raw.target)
    return y[perm[n_test:]], y[perm[:n_test]]


def fit_digits_classifier(data: Digits, epochs: int = 40, seed: int = 0) -> tuple[nn.Module, float]:
    """Adam on the train split with ±1-pixel shifts; returns the net and its test accuracy."""
    y_train, y_test = digits_labels(data)
    torch.manual_seed(seed)
    net = DigitsClassifier()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    g = torch.Generator().manual_seed(seed)
    x = data.train_data
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            shift = torch.randint(-1, 2, (2,), generator=g).tolist()
            loss = nn.functional.cross_entropy(net(torch.roll(x[idx], shift, (2, 3))), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(data.test_data).argmax(1) == y_test).float().mean())
    return net, acc


def pretrained_digits_classifier(path: str | None = None) -> DigitsClassifier:
    """The shipped classifier (or the weights at ``path``), in eval mode."""
    source = Path(path) if path else Path(str(files("sde_gen.models").joinpath(WEIGHTS)))
    if not source.is_file():
        raise ValueError(f"classifier weights {str(source)!r} do not exist")
    net = DigitsClassifier()
    net.load_state_dict(torch.load(source, map_location="cpu", weights_only=True))
    return net.eval().requires_grad_(False)
