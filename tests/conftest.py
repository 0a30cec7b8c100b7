import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
torch.set_num_threads(int(os.environ.get("SDE_GEN_TEST_THREADS", "1")))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)
