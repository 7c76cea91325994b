"""Every registered instance model, one parametrised suite: losses, detections and gradients, a few optimiser steps
lowering the loss; plus the registry's own rules (unknown names and arguments list the valid ones). The semantic
architectures and encoders have their own suite in test_semantic_zoo.py."""

from __future__ import annotations

import pytest
import torch

from core.errors import SegLoopError
from train.models import INSTANCE_MODELS, SEMANTIC_MODELS
from train.models.yolo import MODEL_NAMES as YOLO_NAMES

SMALL_INSTANCE = {f"maskrcnn-{b}": {"backbone": b, "min_size": 64, "max_size": 128, **extra}
                  for b, extra in [("resnet18", {}), ("mobilenet_v3_large", {"anchor_sizes": [16, 32, 64]})]}
# resnet50 trains the same code path as resnet18 at 4x the time: built and checked, not trained, in the suite
BUILD_ONLY = {"maskrcnn-resnet50": {"backbone": "resnet50", "norm": "batch", "min_size": 64, "max_size": 128}}


def test_every_registered_instance_model_has_a_test_config():
    tested = {k.split("-")[0] for k in SMALL_INSTANCE} | set(YOLO_NAMES) | {"ensemble"}  # ensemble: below
    assert tested == set(INSTANCE_MODELS.names())


def test_the_instance_ensemble_fuses_its_members_detections():
    spec = {"name": "maskrcnn", "args": SMALL_INSTANCE["maskrcnn-resnet18"]}
    torch.manual_seed(0)
    ens = INSTANCE_MODELS.build("ensemble", {"members": [spec, spec]}, num_classes=3)
    ens.members[1].load_state_dict(ens.members[0].state_dict())  # two identical members
    ens.eval()
    images, _ = _instance_batch()
    with torch.no_grad():
        one = ens.members[0](images)
        fused = ens(images)
    for a, b in zip(one, fused, strict=True):  # every object found twice, alike: fused, it is that detection
        order = a["scores"].argsort(descending=True)[:100]
        torch.testing.assert_close(b["scores"], a["scores"][order])
        torch.testing.assert_close(b["boxes"], a["boxes"][order])
        torch.testing.assert_close(b["masks"], a["masks"][order])
    # a detection only one member makes is kept at half its score
    det = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.8]),
           "masks": torch.ones(1, 1, 12, 12)}
    empty = {k: v[:0] for k, v in det.items()}
    alone = ens._fuse([det, empty])
    assert alone["scores"].tolist() == pytest.approx([0.4])
    with pytest.raises(RuntimeError, match="predicts only"):
        ens.train()(images, [])


def _instance_batch(n: int = 2) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for _ in range(n):
        img = torch.rand(3, 64, 96, generator=g)
        masks = torch.zeros(2, 64, 96, dtype=torch.uint8)
        masks[0, 10:30, 10:40] = 1
        masks[1, 35:60, 50:90] = 1
        img[:, masks[0].bool()] = torch.tensor([1.0, 0.1, 0.1])[:, None]
        img[:, masks[1].bool()] = torch.tensor([0.1, 0.1, 1.0])[:, None]
        images.append(img)
        targets.append({"boxes": torch.tensor([[10.0, 10, 40, 30], [50, 35, 90, 60]]),
                        "labels": torch.tensor([1, 2]), "masks": masks})
    return images, targets


@pytest.mark.parametrize("key", sorted(SMALL_INSTANCE))
class TestInstanceModel:
    def test_losses_detections_and_gradients(self, key):
        torch.manual_seed(0)
        m = INSTANCE_MODELS.build("maskrcnn", SMALL_INSTANCE[key], num_classes=3)
        images, targets = _instance_batch()
        losses = m(images, targets)
        assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} == set(losses)
        sum(losses.values()).backward()
        first = next(p for p in m.backbone.body.parameters() if p.dim() == 4)
        assert first.grad is not None and first.grad.abs().sum() > 0, "every layer trains from scratch"
        m.eval()
        with torch.no_grad():
            out = m(images[:1])[0]
        assert set(out) == {"boxes", "labels", "scores", "masks"}
        assert out["masks"].shape[1:] == (1, 64, 96)  # masks at the input image's own size


    def test_a_few_steps_lower_the_loss(self, key):
        torch.manual_seed(0)
        m = INSTANCE_MODELS.build("maskrcnn", SMALL_INSTANCE[key], num_classes=3)
        images, targets = _instance_batch()
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        first = last = None
        for _ in range(4):
            loss = sum(m(images, targets).values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 10)
            opt.step()
            first = float(loss) if first is None else first
            last = float(loss)
        assert last < first


@pytest.mark.parametrize("name", YOLO_NAMES)
def test_yolo_model_predicts_torchvision_style_at_the_images_size(name):
    """Every YOLO-seg family and scale: built from Ultralytics' YAML, in eval mode a list of images in, one
    torchvision-style detection dict per image out, masks at that image's own size (not the network's)."""
    torch.manual_seed(0)
    m = INSTANCE_MODELS.build(name, {}, num_classes=3).eval()
    assert m.num_classes == 3 and int(m.imgsz) == 640
    m.imgsz.fill_(64)
    with torch.no_grad():
        outs = m([torch.rand(3, 37, 50), torch.rand(3, 64, 96)])
    for out, hw in zip(outs, [(37, 50), (64, 96)], strict=True):
        assert set(out) == {"boxes", "labels", "scores", "masks"}
        n = len(out["scores"])
        assert 0 < n <= 100 and out["masks"].shape == (n, 1, *hw) and out["masks"].dtype == torch.bool
        assert out["labels"].min() >= 1 and out["labels"].max() <= 3  # COCO category ids
        assert (out["boxes"][:, 2:] <= torch.tensor([hw[1], hw[0]])).all() and (out["boxes"] >= 0).all()
        assert (out["scores"][:-1] >= out["scores"][1:]).all()
    with pytest.raises(RuntimeError, match="Ultralytics' trainer"):
        m.train()([torch.rand(3, 32, 32)])


def test_importing_ultralytics_leaves_pil_and_torch_as_they_were(tmp_path):
    """Ultralytics patches PIL.Image.open and torch.save when imported; SegLoop undoes both, so a file PIL cannot
    identify is still PIL's UnidentifiedImageError (not a search for a HEIF plugin to install)."""
    import io

    from PIL import Image, UnidentifiedImageError

    from train.models.yolo import build_network

    build_network("yolo11n-seg", 3)
    assert Image.open.__module__ == "PIL.Image" and torch.save.__module__ == "torch.serialization"
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(b"not an image"))


@pytest.mark.parametrize("family", ["yolov8", "yolo11", "yolo26"])
def test_yolo_scales_grow_and_gradients_reach_the_first_layer(family):
    sizes = [sum(p.numel() for p in INSTANCE_MODELS.build(f"{family}{s}-seg", {}, num_classes=3).parameters())
             for s in "nsm"]
    assert sizes == sorted(sizes) and sizes[0] < 4e6
    net = INSTANCE_MODELS.build(f"{family}n-seg", {}, num_classes=3).net.train()
    preds = net(torch.rand(2, 3, 64, 64))  # training mode: the raw head outputs Ultralytics' loss takes
    leaves = preds.get("one2many", preds)
    sum(v.float().mean() for v in leaves.values() if isinstance(v, torch.Tensor)).backward()
    first = next(p for p in net.parameters() if p.dim() == 4)
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("key", sorted({**SMALL_INSTANCE, **BUILD_ONLY}))
def test_no_frozen_layers_or_frozen_norm(key):
    from torchvision.ops import FrozenBatchNorm2d

    m = INSTANCE_MODELS.build("maskrcnn", {**SMALL_INSTANCE, **BUILD_ONLY}[key], num_classes=3)
    assert all(p.requires_grad for p in m.parameters())
    assert not any(isinstance(x, FrozenBatchNorm2d) for x in m.modules())


def test_unknown_model_lists_valid_names():
    with pytest.raises(SegLoopError) as e:
        SEMANTIC_MODELS.build("unet++", {}, num_classes=3)
    for name in SEMANTIC_MODELS.names():
        assert name in str(e.value)


def test_unknown_argument_lists_valid_ones():
    with pytest.raises(SegLoopError) as e:
        SEMANTIC_MODELS.build("resunet", {"widht": 8}, num_classes=3)
    assert "did you mean 'width'" in str(e.value) and "depth" in str(e.value)
    with pytest.raises(SegLoopError, match="set by SegLoop"):
        SEMANTIC_MODELS.build("resunet", {"num_classes": 8}, num_classes=3)


def test_unknown_backbone_lists_valid_ones():
    with pytest.raises(SegLoopError) as e:
        INSTANCE_MODELS.build("maskrcnn", {"backbone": "vgg16"}, num_classes=3)
    assert "resnet18" in str(e.value) and "mobilenet_v3_large" in str(e.value)


def test_arguments_are_described():
    assert "down-samplings" in SEMANTIC_MODELS.describe("resunet")["depth"]
    assert "GroupNorm" in INSTANCE_MODELS.describe("maskrcnn")["norm"]


def test_images_without_instances_train_as_negatives():
    torch.manual_seed(0)
    m = INSTANCE_MODELS.build("maskrcnn", SMALL_INSTANCE["maskrcnn-mobilenet_v3_large"], num_classes=3)
    images, targets = _instance_batch()
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                  "masks": torch.zeros(0, 64, 96, dtype=torch.uint8)}
    losses = m(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_backbone_weights_file_is_loaded_or_its_mismatch_named(tmp_path):
    import torchvision

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    args = {"backbone": "resnet18", "min_size": 64, "max_size": 128, "weights_backbone": str(weights)}
    m = INSTANCE_MODELS.build("maskrcnn", {**args, "norm": "batch"}, num_classes=3)
    torch.testing.assert_close(m.backbone.body.conv1.weight, torch.load(weights)["conv1.weight"])
    with pytest.raises(SegLoopError, match="do not match") as e:  # BatchNorm weights into a GroupNorm backbone
        INSTANCE_MODELS.build("maskrcnn", {**args, "norm": "group"}, num_classes=3)
    assert "running_mean" in str(e.value) and str(weights) in str(e.value) and "norm=batch" in str(e.value)
    (tmp_path / "bad.pth").write_bytes(b"junk")
    with pytest.raises(SegLoopError, match="cannot read the backbone weights"):
        INSTANCE_MODELS.build("maskrcnn", {**args, "weights_backbone": str(tmp_path / "bad.pth")}, num_classes=3)
