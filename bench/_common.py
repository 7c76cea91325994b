"""Helpers shared by the benchmarks: the project root on sys.path, timing, and the demo city for inputs."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import core  # noqa: E402,F401 - offline environment


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Fastest of ``repeat`` timed calls (the least disturbed by the rest of the machine)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def frames_args(doc: str | None) -> argparse.Namespace:
    """``--n`` demo frames and ``--repeat`` timings: the arguments of the benchmarks against cityscapesScripts."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="demo frames")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per side (the fastest counts)")
    return p.parse_args()


def demo_city(n: int, cache: Path) -> Path:
    """A demo city of ``n`` frames at the default size, generated once into ``cache``."""
    from ingest.demo import generate

    path = cache / f"demo_city_{n}"
    if not path.exists():
        generate(path, n=n, seed=0)
    return path


def cityscapes_reference() -> None:
    """Make cityscapesScripts importable (installed --no-deps into .cache/reference, as the tests do)."""
    import subprocess

    import numpy as np

    ref = ROOT / ".cache" / "reference"
    if not (ref / "cityscapesscripts").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(ref),
                        "cityscapesscripts==2.3.0", "pyquaternion==0.9.9"], check=True)
    if str(ref) not in sys.path:
        sys.path.append(str(ref))
    if not hasattr(np, "in1d"):
        np.in1d = lambda a, b, invert=False: np.isin(a, b, invert=invert)
