"""Networks (U-Net, MLP, time embeddings) and the ScoreModel preconditioning wrapper."""

from sde_gen.models.score_model import ScoreModel, eps_from_score

__all__ = ["ScoreModel", "eps_from_score"]
