"""``python -m fiftyone_views``: triage a run in FiftyOne (not built yet).

Coming with the triage issue: ``load RUN`` (ground truth and predictions with per-sample scores),
``relabel RUN --view worst_miou`` (hand images back to the labeling loop), ``app RUN`` (the FiftyOne App on
127.0.0.1) and ``triptychs RUN --n 100`` (image | ground truth | prediction panels with an index page).
Until then, ``runs/<run>/eval/<split>/per_image.csv`` lists every test image with its scores, worst first.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fiftyone_views", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.parse_args(argv)
    print("fiftyone_views is not built yet: see `python -m fiftyone_views --help` for what is coming.",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
