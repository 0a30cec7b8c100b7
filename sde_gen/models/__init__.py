"""Networks (U-Net, MLP, time embeddings) and the ScoreModel preconditioning wrapper."""

from sde_gen.models.embeddings import FourierEmbedding, SinusoidalEmbedding
from sde_gen.models.mlp import MLP
from sde_gen.models.score_model import ScoreModel, eps_from_score
from sde_gen.models.unet import UNet

__all__ = ["ScoreModel", "eps_from_score", "MLP", "SinusoidalEmbedding", "FourierEmbedding", "UNet"]
