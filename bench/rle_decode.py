"""Label Studio brush RLE decoding: SegLoop's vectorised decoder vs label_studio_sdk.converter.brush.decode_rle.

Inputs: the car, person and bicycle regions of demo frames, upsampled to Cityscapes size (2048x1024), encoded as
Label Studio brushes (RGBA) by the SDK's own encoder. Both decoders run on the same RLEs; outputs are checked
identical. Target: >= 20x. "All kept" holds every decoded mask in a list, so each one lands in fresh memory and
the page faults of 2 MB per mask weigh on both sides; "each dropped after use" is how ingest decodes.

  python bench/rle_decode.py [--frames 10]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys

import _common
import numpy as np

from ingest.ls_brush import decode_mask, decode_rle
from ingest.polygons import polygons_to_images


def sdk_brush():
    ref = _common.ROOT / ".cache" / "reference"
    path = ref / "label_studio_sdk" / "converter" / "brush.py"
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(ref),
                        "label-studio-sdk==2.1.2"], check=True)
    spec = importlib.util.spec_from_file_location("ls_sdk_brush", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--scale", type=int, default=4, help="upsampling of the 512x256 demo frames")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    ref = sdk_brush()
    city = _common.demo_city(200, _common.ROOT / ".cache" / "bench")
    rles = []
    for f in sorted(city.glob("gtFine/*/*/*_polygons.json"))[: args.frames]:
        _, inst = polygons_to_images(f)
        inst = np.kron(inst, np.ones((args.scale, args.scale), np.int32))
        for v in np.unique(inst[inst >= 1000]):
            mask = (inst == v).astype(np.uint8) * 255
            rles.append(ref.encode_rle(np.repeat(mask[:, :, None], 4, 2).reshape(-1)))
    h, w = inst.shape
    out: dict = {}

    def sdk_masks() -> None:  # what the SDK's decode_from_annotation does per brush region
        out["ref"] = [ref.decode_rle(r).reshape(h, w, 4)[:, :, 3] > 0 for r in rles]

    t_ref = _common.best_of(sdk_masks, args.repeat)
    t_mask = _common.best_of(lambda: out.__setitem__("mask", [decode_mask(r, w, h) for r in rles]), args.repeat)
    t_ref_flat = _common.best_of(lambda: out.__setitem__("ref_flat", [ref.decode_rle(r) for r in rles]),
                                 args.repeat)
    t_flat = _common.best_of(lambda: out.__setitem__("flat", [decode_rle(r) for r in rles]), args.repeat)

    def stream(decode) -> None:  # as ingest uses it: decode a region, paint it, let it go (memory is recycled)
        for r in rles:
            decode(r)

    t_ref_stream = _common.best_of(lambda: stream(lambda r: ref.decode_rle(r).reshape(h, w, 4)[:, :, 3] > 0),
                                   args.repeat)
    t_stream = _common.best_of(lambda: stream(lambda r: decode_mask(r, w, h)), args.repeat)
    assert all(np.array_equal(a, b) for a, b in zip(out["ref"], out["mask"], strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(out["ref_flat"], out["flat"], strict=True))
    n = len(rles)
    kb = sum(len(r) for r in rles) / n / 1024
    print(f"rle_decode: {n} brush regions of {w}x{h} (mean RLE {kb:.1f} KiB), outputs identical: yes")
    print(f"  region -> HxW mask, all kept   label_studio_sdk {1000 * t_ref / n:7.2f} ms   SegLoop "
          f"{1000 * t_mask / n:7.2f} ms   speed-up {t_ref / t_mask:.1f}x (target >= 20x)")
    print(f"  region -> mask, each dropped after use (as ingest does): label_studio_sdk {1000 * t_ref_stream / n:.2f} "
          f"ms   SegLoop {1000 * t_stream / n:.3f} ms   speed-up {t_ref_stream / t_stream:.1f}x")
    print(f"  RLE -> flat RGBA     label_studio_sdk {1000 * t_ref_flat / n:7.2f} ms   SegLoop "
          f"{1000 * t_flat / n:7.2f} ms   speed-up {t_ref_flat / t_flat:.1f}x")


if __name__ == "__main__":
    main()
