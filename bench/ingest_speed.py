"""Polygons -> labelIds + instanceIds PNGs: SegLoop vs cityscapesScripts on the same demo frames.

Reference: what cityscapesScripts does per frame (json2labelImg and json2instanceImg: parse, draw, save with
Pillow's defaults; Pillow 13 no longer writes mode 'I' PNGs, so the instance image is saved as the same pixels in
16 bits). SegLoop: ``ingest.polygons.rasterize_files`` (one parse and one drawing pass for both images, its own
label-map PNG writer), on one process and on all cores. Outputs are checked identical pixel for pixel.

  python bench/ingest_speed.py [--n 200]
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import _common
import numpy as np
from PIL import Image

from ingest.polygons import polygons_to_images, rasterize_files


def main() -> None:
    args = _common.frames_args(__doc__)
    _common.cityscapes_reference()
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    city = _common.demo_city(args.n, _common.ROOT / ".cache" / "bench")
    work = Path(tempfile.mkdtemp())
    ref_dir, our_dir = work / "ref", work / "ours"
    ref_dir.mkdir()
    shutil.copytree(city / "gtFine", our_dir, ignore=shutil.ignore_patterns("*.png"))
    files = sorted(city.glob("gtFine/*/*/*_polygons.json"))[: args.n]
    ours = sorted(our_dir.glob("*/*/*_polygons.json"))[: args.n]

    def reference() -> None:
        for i, f in enumerate(files):
            json2labelImg(str(f), str(ref_dir / f"{i}_labelIds.png"), "ids")
            ann = Annotation()
            ann.fromJsonFile(str(f))
            inst = np.asarray(createInstanceImage(ann, "ids")).astype(np.uint16)
            Image.fromarray(inst).save(ref_dir / f"{i}_instanceIds.png")

    t_ref = _common.best_of(reference, args.repeat)
    t_one = _common.best_of(lambda: rasterize_files(ours, workers=1, progress=False), args.repeat)
    cores = os.cpu_count() or 1
    t_all = _common.best_of(lambda: rasterize_files(ours, workers=cores, progress=False), args.repeat)
    for i, f in enumerate(ours):
        base = str(f)[: -len("polygons.json")]
        for kind in ("labelIds", "instanceIds"):
            a = np.asarray(Image.open(ref_dir / f"{i}_{kind}.png"))
            b = np.asarray(Image.open(base + f"{kind}.png"))
            assert np.array_equal(a, b), f"output differs on {f} ({kind})"
        np.testing.assert_array_equal(np.asarray(Image.open(base + "labelIds.png")), polygons_to_images(files[i])[0])
    n = len(files)
    w, h = Image.open(ref_dir / "0_labelIds.png").size
    print(f"ingest_speed: {n} demo frames {w}x{h}, polygons -> labelIds + instanceIds PNGs, outputs identical: yes")
    print(f"  cityscapesScripts          {n / t_ref:8.1f} frames/s")
    print(f"  SegLoop, 1 process         {n / t_one:8.1f} frames/s   speed-up {t_ref / t_one:.2f}x")
    print(f"  SegLoop, {cores} processes       {n / t_all:8.1f} frames/s   speed-up {t_ref / t_all:.2f}x "
          f"(target >= 3x)")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
