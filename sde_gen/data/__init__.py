"""Data sets: analytic Gaussian mixtures (exact score), 2-D toys, image sets."""

from sde_gen.data.base import DataFileMissing, DataSource, FiniteData, ShapeOnly, TensorData
from sde_gen.data.cifar10 import CIFAR10
from sde_gen.data.gaussian_mixture import (
    GaussianMixture,
    MixtureScore,
    random_mixture,
    ring_mixture,
)
from sde_gen.data.image_folder import ImageFolder
from sde_gen.data.images import Digits, NpzImages
from sde_gen.data.toy2d import Checkerboard, SwissRoll, TwoMoons

__all__ = [
    "DataSource",
    "TensorData",
    "ShapeOnly",
    "FiniteData",
    "DataFileMissing",
    "GaussianMixture",
    "MixtureScore",
    "ring_mixture",
    "random_mixture",
    "Digits",
    "NpzImages",
    "ImageFolder",
    "CIFAR10",
    "SwissRoll",
    "TwoMoons",
    "Checkerboard",
]
