"""Evaluation of trained runs: scores from one confusion matrix, per-image scores, predictions, timing, size."""

import core  # noqa: F401 - sets the offline environment before any third-party import
