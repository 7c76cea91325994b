"""Label tasks of a Label Studio project through its API, as a person would, for ``make loop-demo``.

The "person" reads the scene from the demo generator's Cityscapes polygons beside each image: stuff classes (road,
sidewalk, building, sky, vegetation) are painted with the brush, things (cars, persons, bicycles, poles, signs) are
outlined with polygons drawn over the brushes, so regions overlap as they do in real labelling. The result is
ordered so that Label Studio's editor shows the scene as the Cityscapes file draws it: polygons are always above
brushes there, and the first polygon of a result is on top, so the things are listed nearest (last drawn) first;
the stuff brushes are made disjoint (each pixel to the stuff class drawn last).

  python tools/simulate_labeler.py --project loop-demo --images data/custom_city/leftImg8bit/train --n 12
  python tools/simulate_labeler.py --project loop-demo        # label the tasks already there (the next batch)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from annotate.client import LIGHT_TASK_FIELDS, LabelStudio
from annotate.project import import_images
from annotate.server import document_root
from core.cli import positive_int
from core.errors import SegLoopError, run_cli
from ingest.taxonomy import load_taxonomy

STUFF = {"road", "sidewalk", "building", "sky", "vegetation"}


def regions_for(image: Path, names: set[str]) -> list[dict]:
    # <root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png
    #   -> <root>/gtFine/<split>/<city>/<stem>_gtFine_polygons.json
    split_dir = image.parent.parent
    poly_file = (split_dir.parent.parent / "gtFine" / split_dir.name / image.parent.name /
                 image.name.replace("_leftImg8bit.png", "_gtFine_polygons.json"))
    ann = json.loads(poly_file.read_text())
    w, h = ann["imgWidth"], ann["imgHeight"]
    from ingest.ls_brush import encode_mask

    base = {"to_name": "image", "original_width": w, "original_height": h, "image_rotation": 0}
    stuff_names = sorted(STUFF & names)
    canvas = Image.new("L", (w, h), 0)  # stuff label map: 1 + index into stuff_names, later objects on top
    draw = ImageDraw.Draw(canvas)
    things = []
    for obj in ann["objects"]:
        label = obj["label"]
        if label not in names:
            continue
        if label in STUFF:
            draw.polygon([tuple(p) for p in obj["polygon"]], fill=1 + stuff_names.index(label))
        else:
            things.append({**base, "from_name": "polygon", "type": "polygonlabels",
                           "value": {"points": [[x * 100 / w, y * 100 / h] for x, y in obj["polygon"]],
                                     "polygonlabels": [label], "closed": True}})
    stuff = np.asarray(canvas)
    brushes = [{**base, "from_name": "brush", "type": "brushlabels",
                "value": {"format": "rle", "rle": encode_mask(stuff == k + 1), "brushlabels": [name]}}
               for k, name in enumerate(stuff_names) if (stuff == k + 1).any()]
    return brushes + things[::-1]


def label_tasks(client: LabelStudio, project: dict, n: int | None = None, wanted: set[Path] | None = None,
                progress: bool = False) -> int:
    """Annotate the project's unlabelled tasks (those of ``wanted`` images, else the first ``n``), one API call per
    task as the editor makes; the task listing is read a page at a time without its regions."""
    names = set(load_taxonomy("cityscapes").names)
    root = document_root()
    done = 0
    bar = tqdm(total=len(wanted) if wanted is not None else n, desc="label", unit="task", disable=not progress)
    for task in client.iter_tasks(project["id"], include=LIGHT_TASK_FIELDS):
        if task.get("total_annotations"):
            continue
        if wanted is None and n is not None and done >= n:
            break
        image = (root / task["data"]["file"]).resolve()
        if wanted is not None and image not in wanted:
            continue
        client.post(f"/api/tasks/{task['id']}/annotations", {"result": regions_for(image, names)})
        done += 1
        bar.update()
    bar.close()
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", required=True)
    p.add_argument("--images", default=None,
                   help="folder of demo-generator images to import and label (default: label the project's "
                        "unlabelled tasks, e.g. a batch `annotate next` imported)")
    p.add_argument("--n", type=positive_int, default=12, help="how many images to import and label (>= 1)")
    args = p.parse_args(argv)
    client = LabelStudio.from_env()
    project = client.project_by_title(args.project)
    if project is None:
        raise SegLoopError(f"no project '{args.project}'", fix="python -m annotate project create ...")
    wanted: set[Path] | None = None
    if args.images:
        files = sorted(Path(args.images).rglob("*_leftImg8bit.png"))[: args.n]
        if not files:
            raise SegLoopError("no *_leftImg8bit.png images", path=args.images, fix="give a demo-generator folder")
        listing = Path(args.images).parent / f"{args.project}-labelled.txt"
        listing.write_text("\n".join(str(f) for f in files) + "\n")
        import_images(client, project, listing)
        wanted = {f.resolve() for f in files}
    done = label_tasks(client, project, args.n, wanted)
    print(f"labelled {done} tasks of project '{args.project}' (brushes for stuff, polygons for things)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
