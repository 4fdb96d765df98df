import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on 2 busy shared cores, two threads spin-wait and run many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
