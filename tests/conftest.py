import os

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
torch.set_num_threads(int(os.environ.get("SDE_GEN_TEST_THREADS", "1")))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture(autouse=True)
def _seed_global_rngs():
    """Tests that draw from the global RNGs without a generator still see the same numbers."""
    torch.manual_seed(0)
    np.random.seed(0)
