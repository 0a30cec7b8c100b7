"""Networks (U-Net, MLP, time embeddings) and the ScoreModel preconditioning wrapper."""

from sde_gen.models.embeddings import FourierEmbedding, SinusoidalEmbedding
from sde_gen.models.mlp import MLP
from sde_gen.models.score_model import ScoreModel
from sde_gen.models.unet import UNet

__all__ = ["ScoreModel", "MLP", "SinusoidalEmbedding", "FourierEmbedding", "UNet"]
