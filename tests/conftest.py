import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "tvm_dual",
    deadline=None,  # every example compiles a kernel (about a second)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "tvm_dual"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def host_target():
    from tvm_dual.target import host_target

    return host_target()


def pytest_configure(config):
    warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
