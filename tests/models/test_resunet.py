import pytest
import torch

from core.errors import SegLoopError
from train.models import MODELS, build_model


@pytest.mark.parametrize("hw", [(64, 128), (37, 50)])
def test_shapes_any_size(hw):
    m = build_model("resunet", num_classes=5, width=4, depth=3).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, *hw))
    assert out.shape == (2, 5, *hw)


def test_width_and_depth_scale_parameters():
    small = sum(p.numel() for p in build_model("resunet", 3, width=4, depth=2).parameters())
    wide = sum(p.numel() for p in build_model("resunet", 3, width=8, depth=2).parameters())
    deep = sum(p.numel() for p in build_model("resunet", 3, width=4, depth=3).parameters())
    assert wide > 3 * small and deep > 3 * small


def test_gradients_reach_the_stem():
    m = build_model("resunet", 3, width=4, depth=2)
    m(torch.randn(1, 3, 32, 32)).sum().backward()
    assert m.stem[0][0].weight.grad.abs().sum() > 0


def test_unknown_model_lists_valid_names():
    with pytest.raises(SegLoopError) as e:
        build_model("unet++", 3)
    for name in MODELS:
        assert name in str(e.value)


@pytest.mark.parametrize("stride", [2, 4])
def test_stem_stride_keeps_output_size(stride):
    m = build_model("resunet", num_classes=3, width=16, depth=2, stem_stride=stride).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 50, 70))
    assert out.shape == (1, 3, 50, 70)
    with pytest.raises(ValueError, match="stem_stride"):
        build_model("resunet", 3, stem_stride=3)
