import pytest
import torch


@pytest.fixture(autouse=True)
def _threads():
    """Two torch threads per test: the CI machine has two cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)
