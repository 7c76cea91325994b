"""``python -m annotate``: the Label Studio loop (not built yet).

Coming with the labeling-loop issue: ``server start|stop|status`` (a local Label Studio on 127.0.0.1),
``project create`` (labeling config from a taxonomy), ``import`` (images with content hashes), ``predict``
(pre-annotations from ``evaluate`` prediction files), ``export`` (snapshots that ``ingest`` reads) and ``next``
(uncertainty-ranked, diverse batches to label).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m annotate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.parse_args(argv)
    print("annotate is not built yet: see `python -m annotate --help` for what is coming.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
