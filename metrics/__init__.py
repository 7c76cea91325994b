"""Evaluators (reset / process / evaluate), one per benchmark: semantic scores from one confusion matrix
(``metrics.semantic``), COCO mask and box AP (``metrics.coco``), panoptic quality (``metrics.panoptic``).

Below ``train`` and ``evaluate`` in the import graph (it imports ``core`` only; ``coco`` and ``panoptic`` need no
torch): validation during training and ``evaluate run`` score with the same code.
"""
