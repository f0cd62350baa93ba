import os

import numpy as np
import pytest
import torch

# Tests run on CPU with a fixed seed and few threads (CI has 2 cores).
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
