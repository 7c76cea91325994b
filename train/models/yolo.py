"""YOLO-seg (Ultralytics' YOLOv8, YOLO11 and YOLO26 segmentation networks) as instance models.

The network is Ultralytics' own ``SegmentationModel``, built from the YAML that ships in the pinned package (no
weights are fetched: a model starts from random weights, or from a SegLoop checkpoint given as ``model.weights``).
``YoloSeg`` wraps it so that SegLoop's instance readers see it as they see Mask R-CNN: in eval mode it takes a list
of CHW float images in [0, 1] and returns torchvision-style detections per image (``boxes``, ``labels`` as COCO
category ids, ``scores``, ``masks`` at the image's own resolution). Masks are assembled at native resolution from
the prototypes (Ultralytics' ``retina_masks``), not at the network's quarter-resolution output, so a YOLO model and
a Mask R-CNN are scored on the same pixels by the same COCO evaluator.

Training is not done here: Ultralytics' trainer runs the epochs (``tasks/instance/yolo.py``) on the wrapped
network, ``YoloSeg.net``. The YOLO classes are the taxonomy's train indices (category id - 1), so no mapping table
travels with a checkpoint; classes without instances simply never appear in the labels.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tasks.instance.names import FAMILIES, MODEL_NAMES, SCALES, is_yolo  # noqa: F401  (re-exported)
from train.models.registry import INSTANCE_MODELS

# what detections evaluation keeps: Ultralytics' validation settings (a low confidence floor, so the precision-
# recall curve is complete), with COCO's 100 detections per image, the most pycocotools scores
CONF = 0.001
IOU = 0.7
MAX_DET = 100


def offline_environment(config_dir: Path) -> Path:
    """Make Ultralytics work without a network before it is first imported, and return its settings folder.

    ``YOLO_OFFLINE`` must be the string ``true`` (Ultralytics' ``env_bool``; ``1`` is read as true too, but the
    documented value is kept). ``YOLO_CONFIG_DIR`` keeps Ultralytics' settings file out of the user's home, and a
    local TTF placed there as ``Arial.ttf`` (matplotlib's DejaVu Sans) stops its plotting code from downloading a
    font. Ultralytics reads both variables once, at import: in a process that imported it already, its own
    settings folder is kept and only the font is placed there.
    """
    os.environ["YOLO_OFFLINE"] = "true"
    if "ultralytics" not in sys.modules:
        os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
        folder = Path(os.environ["YOLO_CONFIG_DIR"])
    else:
        from ultralytics.utils import USER_CONFIG_DIR

        folder = Path(USER_CONFIG_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    font = folder / "Arial.ttf"
    if not font.is_file():
        import matplotlib

        shutil.copyfile(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", font)
    printing = np.get_printoptions()
    import ultralytics  # noqa: F401  (reads the variables above)
    from ultralytics.utils import SETTINGS, patches

    if SETTINGS.get("sync", True):
        SETTINGS.update(sync=False)  # no usage analytics
    # Importing Ultralytics replaces PIL's Image.open (an image PIL cannot identify then makes it look for, and try
    # to pip-install, a HEIF plugin) and torch.save (retries with sleeps) for the whole process. SegLoop's readers
    # rely on both behaving as documented, and YOLO training and prediction need neither patch: undo them.
    from PIL import Image

    Image.open = patches._image_open
    torch.save = patches._torch_save
    np.set_printoptions(**printing)  # and its number format for every array the process prints
    torch.set_printoptions(profile="default")
    return folder


def default_config_dir() -> Path:
    """Where Ultralytics keeps its settings when SegLoop loads a YOLO model outside a training run."""
    from core.fsio import user_cache_dir

    return user_cache_dir("ultralytics")


class YoloSeg(nn.Module):
    """An Ultralytics segmentation network as a torchvision-style instance model (eval mode only).

    ``imgsz`` (a buffer, saved with the weights) is the size the network was trained at: each image is letterboxed
    to it (long side ``imgsz``, padded to a multiple of the stride, as Ultralytics' predictor does) and its
    detections mapped back to the image's own pixels.
    """

    def __init__(self, net: nn.Module, imgsz: int = 640) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("imgsz", torch.tensor(int(imgsz)))

    @property
    def num_classes(self) -> int:
        return int(self.net.model[-1].nc)

    @property
    def end2end(self) -> bool:
        """YOLO26's one-to-one head gives final detections without NMS; the others need NMS."""
        return getattr(self.net.model[-1], "one2one_cv2", None) is not None

    def forward(self, images: list[torch.Tensor], targets: Any = None) -> list[dict[str, torch.Tensor]]:
        if targets is not None or self.training:
            raise RuntimeError("YoloSeg predicts only; Ultralytics' trainer trains YoloSeg.net")
        return [self._predict(im) for im in images]

    def _predict(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        from ultralytics.data.augment import LetterBox
        from ultralytics.utils import nms, ops

        h, w = image.shape[-2:]
        stride = int(self.net.stride.max())
        rgb = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        boxed = LetterBox((int(self.imgsz), int(self.imgsz)), auto=True, stride=stride)(image=rgb)
        x = torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1))).to(image.device).float().div_(255)
        head = self.net.model[-1]
        if self.end2end:
            head.end2end = True
            head.max_det = MAX_DET
        out = self.net(x[None])  # eval mode: ((detections, prototypes), raw head outputs)
        preds, protos = out[0][0], out[0][1]
        det = nms.non_max_suppression(preds.float(), CONF, IOU, nc=self.num_classes, multi_label=True,
                                      max_det=MAX_DET, end2end=self.end2end)[0]
        boxes = ops.scale_boxes(x.shape[-2:], det[:, :4].clone(), (h, w))
        if len(det):
            masks = ops.process_mask_native(protos[0].float(), det[:, 6:].float(), boxes, (h, w)) > 0
        else:
            masks = torch.zeros((0, h, w), dtype=torch.bool, device=image.device)
        return {"boxes": boxes, "labels": det[:, 5].long() + 1, "scores": det[:, 4], "masks": masks[:, None]}


def build_network(name: str, nc: int) -> nn.Module:
    """Ultralytics' ``SegmentationModel`` from the YAML of ``name`` (the scale is the letter after the family)."""
    offline_environment(default_config_dir())
    from ultralytics.nn.tasks import SegmentationModel
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # "Overriding model.yaml nc=80 with nc=...": the YAML's COCO classes
    try:
        return SegmentationModel(f"{name}.yaml", nc=nc, verbose=False)
    finally:
        LOGGER.setLevel(level)


def _register(name: str) -> None:
    family = next(f for f in FAMILIES if name.startswith(f))

    def build(num_classes: int) -> YoloSeg:
        net = build_network(name, num_classes)  # one YOLO class per taxonomy class; no background class
        return YoloSeg(net)

    build.__name__ = name.replace("-", "_")
    build.__doc__ = (f"{FAMILIES[family]} segmentation network, scale '{name[len(family)]}', from Ultralytics' YAML; "
                     f"trained by Ultralytics' trainer.")
    INSTANCE_MODELS.register(name)(build)


for _name in MODEL_NAMES:
    _register(_name)



def ultralytics_weights(path: Path) -> dict[str, torch.Tensor] | None:
    """The network weights in an Ultralytics ``.pt`` (its EMA, else its model) under ``YoloSeg``'s state-dict
    names, or None when the file is not an Ultralytics checkpoint. Such a file is a pickle of Ultralytics' classes;
    it is read by ``train.checkpoint.read_module_pickle``, which rebuilds its tensors and runs none of its code."""
    import zipfile

    from train.checkpoint import module_tensors, read_module_pickle

    try:
        with zipfile.ZipFile(path) as z:
            pickled = next(n for n in z.namelist() if n.endswith("data.pkl"))
            if b"ultralytics.nn" not in z.read(pickled):
                return None
    except (zipfile.BadZipFile, StopIteration, OSError):
        return None
    ckpt = read_module_pickle(path)
    record = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    return {f"net.{k}": v.float() if v.is_floating_point() else v for k, v in module_tensors(record).items()}
