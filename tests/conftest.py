import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waiting when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
