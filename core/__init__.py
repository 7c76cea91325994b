"""Shared foundation of SegLoop: errors, atomic file writes, the config mechanism and segmentation metrics.

Every stage imports ``core``; ``core`` imports no stage, so the stage graph stays acyclic. Importing it also
keeps third-party libraries offline: SegLoop runs where nothing can be downloaded.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations' version check calls home
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm / segmentation_models_pytorch never fetch weights
os.environ.setdefault("YOLO_OFFLINE", "1")
