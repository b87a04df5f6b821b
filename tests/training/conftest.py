import pytest
import torch


@pytest.fixture(autouse=True)
def _threads():
    """One torch thread: the tiny models are dominated by per-op overhead, which extra threads
    only add to on the two-core CI machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
