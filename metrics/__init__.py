"""Evaluators (reset / process / evaluate), one per benchmark: COCO instance AP (``metrics.coco``).

Below ``train`` and ``evaluate`` in the import graph (it imports ``core`` and ``ingest`` only): validation during
training and ``evaluate run`` score with the same code.
"""
