import torch

from train.models import build_model


def test_shapes_and_backward():
    m = build_model("linknet", num_classes=4, width=4, depth=3)
    out = m(torch.randn(2, 3, 40, 72))
    assert out.shape == (2, 4, 40, 72)
    out.mean().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_lighter_than_resunet_at_same_width():
    n = lambda name: sum(p.numel() for p in build_model(name, 19, width=16, depth=4).parameters())
    assert n("linknet") < n("resunet")
