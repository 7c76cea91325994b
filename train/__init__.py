"""Training: models found by name, losses, augmentation, the training loop, checkpoints and resume."""

import core  # noqa: F401 - sets the offline environment before any third-party import
