"""The same generic blocks run on the 1D and 2D dense backends."""
import pytest
import torch
from ffnet.layers import FFNetBlock, get_backend


@pytest.mark.parametrize("be,shape", [("1d", (2, 16, 96)), ("2d", (2, 16, 12, 12))])
def test_block_preserves_shape_and_trains(be, shape, device):
    torch.manual_seed(0)
    block = FFNetBlock(16, kernel_size=7, small_kernel=3, cm_kernel_size=7, cm_small_kernel=3, drop_path=0.2,
                       ls_init_value=1e-2, backend=be).to(device).train()
    x = torch.randn(shape, device=device)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_backend_names():
    assert get_backend("1d").ndim == 1 and get_backend("2d").ndim == 2
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("4d")
    with pytest.raises(ValueError, match="odd"):
        get_backend("2d").conv(4, 4, 4)


def test_drop_path_drops_whole_samples():
    from ffnet.layers import DropPath

    torch.manual_seed(0)
    dp = DropPath(0.5).train()
    y = dp(torch.ones(64, 3, 4, 4))
    per_sample = y.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    assert torch.equal(dp.eval()(torch.ones(2, 3)), torch.ones(2, 3))
