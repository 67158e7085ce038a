import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small FFTs and RK4 steps run fastest on one thread; on a shared 2-core machine two threads
    wait on each other (10x slower measured). Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
