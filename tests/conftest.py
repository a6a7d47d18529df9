import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread_per_worker():
    """Tests run as 2 xdist workers on 2 cores: one torch thread each avoids oversubscription."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
