"""The demo city: procedurally generated street scenes in the exact Cityscapes layout.

Each frame is a perspective street (road, sidewalks, building facades or parks, sky) with poles, traffic signs,
trees, parked and driving cars, pedestrians and bicycles that occlude each other, under varied light, haze,
shadows and sensor noise. Scenes are described as Cityscapes polygons first; the label images are rasterised from
those polygons (as cityscapesScripts does) and the photo is rendered from the same object map, so labels and pixels
agree exactly. Same seed, same bytes: every random draw comes from a generator seeded by (seed, frame index).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from core.errors import SegLoopError
from core.fsio import atomic_dir, save_png
from ingest.polygons import color_image, rasterize

WIDTH, HEIGHT = 512, 256
# Cities per split, in the spirit of Cityscapes (a city never crosses splits).
CITIES = {
    "train": ["aachen", "bochum", "bremen", "cologne", "darmstadt", "erfurt"],
    "val": ["frankfurt", "lindau"],
    "test": ["munich", "berlin"],
}
SPLIT_SHARE = {"train": 0.7, "val": 0.15, "test": 0.15}


@dataclass
class Obj:
    """One annotated polygon plus how to paint it."""

    label: str
    polygon: list[tuple[int, int]]
    depth: float  # 0 = horizon (far), 1 = bottom of the image (near); painter's order
    look: dict


def _clip(poly: list[tuple[float, float]], w: int, h: int) -> list[tuple[int, int]]:
    """Clip a polygon to the image rectangle (Sutherland-Hodgman), keeping its shape, and round to pixels."""
    pts = [(float(x), float(y)) for x, y in poly]
    edges = [(0, 0.0, 1), (0, w - 1.0, -1), (1, 0.0, 1), (1, h - 1.0, -1)]  # (axis, bound, inside direction)
    for axis, bound, sign in edges:
        if not pts:
            break
        out: list[tuple[float, float]] = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            cur_in = (cur[axis] - bound) * sign >= 0
            prev_in = (prev[axis] - bound) * sign >= 0
            if cur_in != prev_in:
                f = (bound - prev[axis]) / (cur[axis] - prev[axis])
                cross = (prev[0] + f * (cur[0] - prev[0]), prev[1] + f * (cur[1] - prev[1]))
                out.append(cross)
            if cur_in:
                out.append(cur)
        pts = out
    rounded = [(int(round(x)), int(round(y))) for x, y in pts]
    return [p for i, p in enumerate(rounded) if i == 0 or p != rounded[i - 1]]


def _blob(cx: float, cy: float, rx: float, ry: float, rng: np.random.Generator, n: int = 14) -> list:
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 0.4)
    rad = rng.uniform(0.8, 1.15, n)
    return [(cx + rx * r * math.cos(a), cy + ry * r * math.sin(a)) for a, r in zip(ang, rad, strict=True)]


class Scene:
    """Geometry of one street: horizon, vanishing point and the road/sidewalk edges as lines in the image."""

    def __init__(self, rng: np.random.Generator, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.yh = h * rng.uniform(0.36, 0.5)
        self.xv = w * rng.uniform(0.38, 0.62)
        self.road_top = w * rng.uniform(0.01, 0.025)
        self.road_l = w * rng.uniform(-0.25, 0.12)
        self.road_r = w * rng.uniform(0.88, 1.25)
        self.side_top = w * rng.uniform(0.01, 0.03)
        self.side_w = w * rng.uniform(0.25, 0.5)

    def y(self, t: float) -> float:
        return self.yh + t * (self.h - self.yh)

    def road_x(self, t: float, u: float) -> float:
        """x at depth t of lateral position u (-1 left road edge, +1 right road edge, beyond = sidewalk)."""
        left = self.xv - self.road_top + t * (self.road_l - (self.xv - self.road_top))
        right = self.xv + self.road_top + t * (self.road_r - (self.xv + self.road_top))
        mid, half = (left + right) / 2, (right - left) / 2
        return mid + u * half

    def side_x(self, t: float, side: int) -> float:
        """Outer sidewalk edge (where facades stand) at depth t on the left (-1) or right (+1)."""
        edge = self.road_x(t, side)
        return edge + side * (self.side_top + t * (self.side_w - self.side_top))


def _facades(scene: Scene, side: int, rng: np.random.Generator, park: bool) -> list[Obj]:
    """Building facades (or a park's tree line) standing on one outer sidewalk edge, in perspective."""
    out: list[Obj] = []
    h = scene.h
    t_edge = 1.0
    ts = [t_edge]
    while ts[-1] > 0.02:
        ts.append(ts[-1] * rng.uniform(0.45, 0.75))
    ts[-1] = 0.0
    for t0, t1 in itertools.pairwise(ts):
        x0, x1 = scene.side_x(t0, side), scene.side_x(t1, side)
        y0, y1 = scene.y(t0), scene.y(t1)
        height = rng.uniform(0.8, 2.6) * (h - scene.yh)
        top0 = y0 - height * t0 - rng.uniform(0.05, 0.2) * (h - scene.yh) * 0.2
        top1 = y1 - height * t1 - 2
        xe = 0 if side < 0 else scene.w - 1
        poly = [(xe, min(top0, y0)), (x0, min(top0, y0)), (x1, top1), (x1, y1), (x0, y0), (xe, max(y0, h))]
        if park:
            label, look = "vegetation", {"kind": "vegetation", "hue": rng.uniform(0.8, 1.2)}
            poly = [(xe, top0), (x0, top0 + rng.uniform(-10, 10)), (x1, top1), (x1, y1), (x0, y0), (xe, max(y0, h))]
        else:
            pal = [(150, 120, 100), (190, 170, 140), (120, 110, 105), (170, 90, 70), (200, 195, 185), (95, 100, 110)]
            base = np.array(pal[rng.integers(len(pal))], float) * rng.uniform(0.8, 1.15)
            label, look = "building", {"kind": "building", "rgb": base, "win": rng.uniform(5, 12),
                                       "win_gap": rng.uniform(0.35, 0.6)}
        out.append(Obj(label, _clip(poly, scene.w, h), -1.0 + 0.01 * t0, look))
    return out


def _car(scene: Scene, t: float, u: float, rng: np.random.Generator) -> Obj:
    x, y = scene.road_x(t, u), scene.y(t)
    ch = (scene.h - scene.yh) * t * rng.uniform(0.5, 0.62)
    cw = ch * rng.uniform(1.5, 1.9)
    poly = [(x - cw / 2, y), (x + cw / 2, y), (x + cw / 2, y - 0.5 * ch), (x + 0.36 * cw, y - ch),
            (x - 0.36 * cw, y - ch), (x - cw / 2, y - 0.5 * ch)]
    colors = [(160, 20, 20), (20, 40, 140), (220, 220, 225), (25, 25, 28), (150, 155, 160), (30, 90, 60),
              (200, 160, 30)]
    return Obj("car", _clip(poly, scene.w, scene.h), t,
               {"kind": "car", "rgb": np.array(colors[rng.integers(len(colors))], float), "y": y, "h": ch})


def _person(scene: Scene, t: float, x: float, rng: np.random.Generator) -> Obj:
    y = scene.y(t)
    ph = (scene.h - scene.yh) * t * rng.uniform(0.85, 1.05)
    s = rng.uniform(-0.04, 0.04)  # stride
    rel = [(-0.05, -1.0), (0.05, -1.0), (0.07, -0.9), (0.05, -0.83), (0.16, -0.78), (0.18, -0.45), (0.12, -0.45),
           (0.1, -0.62), (0.09, -0.5), (0.1 + s, 0.0), (0.03, 0.0), (0.0, -0.42), (-0.03, 0.0), (-0.1 - s, 0.0),
           (-0.09, -0.5), (-0.1, -0.62), (-0.12, -0.45), (-0.18, -0.45), (-0.16, -0.78), (-0.05, -0.83),
           (-0.07, -0.9)]
    poly = [(x + ph * a * 1.1, y + ph * b) for a, b in rel]
    shirts = [(200, 30, 40), (30, 60, 160), (230, 230, 230), (40, 40, 40), (220, 170, 40), (60, 130, 70)]
    return Obj("person", _clip(poly, scene.w, scene.h), t,
               {"kind": "person", "shirt": np.array(shirts[rng.integers(len(shirts))], float),
                "pants": np.array([40, 45, 70], float) * rng.uniform(0.6, 1.4), "y": y, "h": ph})


def _bicycle(scene: Scene, t: float, x: float, rng: np.random.Generator) -> Obj:
    y = scene.y(t)
    bh = (scene.h - scene.yh) * t * 0.55
    r = bh * 0.42
    lx, rx = x - bh * 0.6, x + bh * 0.6
    pts = [(lx + r * math.cos(a), y - r + r * math.sin(a)) for a in np.linspace(math.pi / 2, 3 * math.pi / 2, 7)]
    pts += [(x - bh * 0.2, y - bh * 0.95), (x + bh * 0.45, y - bh * 1.0)]
    pts += [(rx + r * math.cos(a), y - r + r * math.sin(a)) for a in np.linspace(-math.pi / 2, math.pi / 2, 7)]
    pts += [(x, y - r * 0.6)]
    return Obj("bicycle", _clip(pts, scene.w, scene.h), t,
               {"kind": "bicycle", "rgb": np.array([(180, 30, 30), (30, 30, 160), (200, 200, 200)][rng.integers(3)],
                                                    float), "y": y, "r": r, "lx": lx, "rx": rx})


def _pole_and_sign(scene: Scene, t: float, side: int, rng: np.random.Generator) -> list[Obj]:
    x = scene.road_x(t, side * rng.uniform(1.05, 1.2))
    y = scene.y(t)
    ph = (scene.h - scene.yh) * t * rng.uniform(1.6, 2.2)
    pw = max(2.0, 7 * t)
    pole = Obj("pole", _clip([(x - pw, y), (x + pw, y), (x + pw, y - ph), (x - pw, y - ph)], scene.w, scene.h), t,
               {"kind": "pole", "rgb": np.array([120, 125, 130], float) * rng.uniform(0.7, 1.2)})
    sr = max(6.0, 22 * t)
    cy = y - ph - sr * 0.6
    shape = rng.integers(3)
    if shape == 0:
        poly = _blob(x, cy, sr, sr, rng, 12)
        rgb = (200, 30, 30)
    elif shape == 1:
        poly = [(x - sr, cy - sr * 0.8), (x + sr, cy - sr * 0.8), (x + sr, cy + sr * 0.8), (x - sr, cy + sr * 0.8)]
        rgb = (30, 70, 190)
    else:
        poly = [(x, cy - sr * 1.1), (x + sr * 1.1, cy), (x, cy + sr * 1.1), (x - sr * 1.1, cy)]
        rgb = (235, 200, 30)
    sign = Obj("traffic sign", _clip(poly, scene.w, scene.h), t + 1e-4, {"kind": "sign", "rgb": np.array(rgb, float)})
    return [pole, sign]


def _tree(scene: Scene, t: float, side: int, rng: np.random.Generator) -> Obj:
    x = scene.road_x(t, side * rng.uniform(1.15, 1.5))
    y = scene.y(t)
    th = (scene.h - scene.yh) * t * rng.uniform(1.6, 2.4)
    tw = max(1.5, 4 * t)
    crown = _blob(x, y - th, th * 0.35, th * 0.3, rng, 16)
    # trunk joined to the crown's lowest point: one polygon, as annotators draw a tree
    lowest = max(range(len(crown)), key=lambda i: crown[i][1])
    poly = crown[: lowest + 1] + [(x + tw, y - th * 0.7), (x + tw, y), (x - tw, y), (x - tw, y - th * 0.7)] + \
        crown[lowest + 1:]
    return Obj("vegetation", _clip(poly, scene.w, scene.h), t, {"kind": "vegetation", "hue": rng.uniform(0.8, 1.2)})


def make_scene(rng: np.random.Generator, w: int = WIDTH, h: int = HEIGHT) -> tuple[list[Obj], Scene]:
    """All objects of one frame, in drawing order (far to near), as Cityscapes polygons."""
    sc = Scene(rng, w, h)
    objs: list[Obj] = [Obj("sky", [(0, 0), (w - 1, 0), (w - 1, int(sc.yh) + 2), (0, int(sc.yh) + 2)], -3,
                           {"kind": "sky"})]
    for side in (-1, 1):
        objs += _facades(sc, side, rng, park=rng.random() < 0.25)
    # sidewalks (outer edge to road edge), then the road
    for side in (-1, 1):
        poly = [(sc.side_x(0, side), sc.yh), (sc.road_x(0, side), sc.yh), (sc.road_x(1, side), h),
                (sc.side_x(1, side), h)]
        objs.append(Obj("sidewalk", _clip(poly, w, h), -0.6, {"kind": "sidewalk", "tone": rng.uniform(0.8, 1.2)}))
    road = [(sc.road_x(0, -1), sc.yh), (sc.road_x(0, 1), sc.yh), (sc.road_x(1, 1), h), (sc.road_x(1, -1), h)]
    objs.append(Obj("road", _clip(road, w, h), -0.5, {"kind": "road", "tone": rng.uniform(0.75, 1.2)}))
    things: list[Obj] = []
    for _ in range(rng.integers(1, 6)):
        things.append(_car(sc, rng.uniform(0.15, 0.85), rng.choice([-0.55, -0.2, 0.2, 0.55]) + rng.uniform(-.1, .1),
                           rng))
    for _ in range(rng.integers(1, 6)):
        side = rng.choice([-1, 1])
        t = rng.uniform(0.2, 0.9)
        things.append(_person(sc, t, sc.road_x(t, side * rng.uniform(1.05, 1.6)), rng))
    if rng.random() < 0.4:  # someone crossing the road
        t = rng.uniform(0.3, 0.8)
        things.append(_person(sc, t, sc.road_x(t, rng.uniform(-0.8, 0.8)), rng))
    for _ in range(rng.integers(0, 3)):
        side = rng.choice([-1, 1])
        t = rng.uniform(0.3, 0.9)
        things.append(_bicycle(sc, t, sc.road_x(t, side * rng.uniform(1.1, 1.5)), rng))
    for _ in range(rng.integers(1, 4)):
        things += _pole_and_sign(sc, rng.uniform(0.15, 0.9), rng.choice([-1, 1]), rng)
    for _ in range(rng.integers(0, 4)):
        things.append(_tree(sc, rng.uniform(0.1, 0.8), rng.choice([-1, 1]), rng))
    things.sort(key=lambda o: o.depth)
    objs += things
    if rng.random() < 0.4:  # the ego vehicle's bonnet: labelled 'ego vehicle', ignored in training
        bh = h * rng.uniform(0.06, 0.12)
        xs = np.linspace(0, w - 1, 9)
        poly = [(x, h - bh * (1 - 0.5 * ((x - w / 2) / (w / 2)) ** 2)) for x in xs] + [(w - 1, h - 1), (0, h - 1)]
        objs.append(Obj("ego vehicle", _clip(poly, w, h), 2.0, {"kind": "ego"}))
    # objects entirely outside the frame clip to nothing; a polygon needs three distinct points
    return [o for o in objs if len(set(o.polygon)) >= 3], sc


def _noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] at roughly ``scale`` pixels."""
    small = rng.uniform(-1, 1, (h // scale + 2, w // scale + 2)).astype(np.float32)
    img = Image.fromarray(small).resize((w + 2 * scale, h + 2 * scale), Image.BILINEAR)
    return np.asarray(img)[scale:scale + h, scale:scale + w]


def render(objs: list[Obj], scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Paint the photo of a scene from its object map: each pixel belongs to exactly the object the labels say."""
    w, h = scene.w, scene.h
    omap_img = Image.new("I", (w, h), 0)
    draw = ImageDraw.Draw(omap_img)
    for k, o in enumerate(objs, start=1):
        draw.polygon(o.polygon, fill=k)
    omap = np.asarray(omap_img)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fine = rng.normal(0, 1, (h, w)).astype(np.float32)
    mid = _noise(rng, h, w, 6)
    coarse = _noise(rng, h, w, 40)
    img = np.zeros((h, w, 3), np.float32)
    overcast = rng.random() < 0.35
    for k, o in enumerate(objs, start=1):
        m = omap == k
        if not m.any():
            continue
        look = o.look
        kind = look["kind"]
        if kind == "sky":
            top = np.array([200, 205, 210] if overcast else [70, 130, 210], np.float32)
            bot = np.array([225, 228, 230] if overcast else [175, 205, 235], np.float32)
            f = (yy[m] / max(scene.yh, 1))[:, None]
            col = top * (1 - f) + bot * f + 18 * coarse[m][:, None]
        elif kind == "building":
            base = look["rgb"].astype(np.float32)
            p = look["win"]
            wx = (xx[m] % (2 * p)) < p * (1 - look["win_gap"])
            wy = (yy[m] % (1.6 * p)) < p * 0.9
            win = (wx & wy)[:, None]
            col = np.where(win, np.array([60, 70, 85], np.float32) + 25 * mid[m][:, None], base)
            col = col + 10 * mid[m][:, None]
        elif kind == "vegetation":
            g = np.array([60, 110, 40], np.float32) * look["hue"]
            col = g + 35 * mid[m][:, None] * np.array([0.6, 1.0, 0.4]) + 14 * fine[m][:, None]
        elif kind == "road":
            col = np.full((m.sum(), 3), 88 * look["tone"], np.float32) + 8 * mid[m][:, None] + 6 * fine[m][:, None]
            cx = np.array([scene.road_x(max((y - scene.yh) / (h - scene.yh), 0), 0) for y in yy[m][::1]])
            t = np.clip((yy[m] - scene.yh) / (h - scene.yh), 0, 1)
            dash = (np.abs(xx[m] - cx) < 1 + 3 * t) & ((np.log(t + 0.05) * 6) % 2 < 1)
            col[dash] = [215, 215, 200]
        elif kind == "sidewalk":
            tile = ((xx[m] % 14 < 1) | (yy[m] % 8 < 1))[:, None]
            base = np.array([150, 140, 135], np.float32) * look["tone"]
            col = np.where(tile, base * 0.75, base) + 6 * mid[m][:, None]
        elif kind == "car":
            upper = (yy[m] < look["y"] - 0.5 * look["h"])[:, None]
            lower = (yy[m] > look["y"] - 0.12 * look["h"])[:, None]
            col = np.where(upper, np.array([40, 50, 60], np.float32), look["rgb"])
            col = np.where(lower, np.array([20, 20, 20], np.float32), col) + 8 * mid[m][:, None]
        elif kind == "person":
            rel = ((look["y"] - yy[m]) / max(look["h"], 1))[:, None]
            col = np.where(rel > 0.83, np.array([205, 160, 130], np.float32),
                           np.where(rel > 0.47, look["shirt"], look["pants"]))
        elif kind == "bicycle":
            col = np.tile(look["rgb"], (m.sum(), 1)).astype(np.float32)
            r = look["r"]
            for cx in (look["lx"], look["rx"]):
                d = np.hypot(xx[m] - cx, yy[m] - (look["y"] - r))
                col[(d < r) & (d > r * 0.7)] = [15, 15, 15]
                col[d <= r * 0.7] = col[d <= r * 0.7] * 0.3 + 90
        elif kind == "pole":
            col = np.tile(look["rgb"], (m.sum(), 1)).astype(np.float32) + 10 * (xx[m] % 3 == 0)[:, None]
        elif kind == "sign":
            col = np.tile(look["rgb"], (m.sum(), 1)).astype(np.float32)
        elif kind == "ego":
            col = np.array([30, 35, 45], np.float32) + 20 * (yy[m] / h)[:, None]
        else:
            col = np.full((m.sum(), 3), 128, np.float32)
        img[m] = col
    # light: global gain and colour cast, a cast shadow across the street, haze with distance, sensor noise
    gain = rng.uniform(0.6, 1.3) * (0.85 if overcast else 1.0)
    cast = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    img *= gain * cast
    if rng.random() < 0.5:
        x0, slope = rng.uniform(0, w), rng.uniform(-2, 2)
        shadow = ((xx - x0 - slope * (yy - scene.yh)) < 0) & (yy > scene.yh)
        img[shadow] *= rng.uniform(0.55, 0.8)
    haze = rng.uniform(0, 0.35)
    depth = np.clip(1 - np.abs(yy - scene.yh) / (h * 0.5), 0, 1)[..., None]
    img = img * (1 - haze * depth) + 200 * haze * depth
    img += rng.uniform(2, 7) * fine[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def polygons_json(objs: list[Obj], w: int, h: int) -> dict:
    return {"imgHeight": h, "imgWidth": w,
            "objects": [{"label": o.label, "polygon": [list(p) for p in o.polygon]} for o in objs]}


def frame_plan(n: int) -> list[tuple[str, str, int]]:
    """(split, city, sequence) of every frame: splits by share, cities round-robin inside each split."""
    plan = []
    counts = {s: int(round(n * f)) for s, f in SPLIT_SHARE.items()}
    counts["train"] = n - counts["val"] - counts["test"]
    for split, count in counts.items():
        cities = CITIES[split]
        for i in range(count):
            plan.append((split, cities[i % len(cities)], i // len(cities)))
    return plan


def generate(out: str | Path, n: int = 300, seed: int = 0, size: tuple[int, int] = (WIDTH, HEIGHT),
             progress: bool = True) -> Path:
    """Write ``n`` frames under ``out`` (leftImg8bit/ and gtFine/), atomically: the folder appears complete or not."""
    out = Path(out)
    if n < 3:
        raise SegLoopError(f"--n {n} is too small", fix="ask for at least 3 frames (one per split)")
    if out.exists() and any(out.iterdir()):
        raise SegLoopError("output folder exists and is not empty", path=out,
                           fix="remove it or pass another --out (the generator never overwrites)")
    if out.exists():
        out.rmdir()
    w, h = size
    with atomic_dir(out) as tmp:
        for idx, (split, city, seq) in enumerate(tqdm(frame_plan(n), desc="demo city", disable=not progress)):
            rng = np.random.default_rng([seed, idx])
            objs, scene = make_scene(rng, w, h)
            photo = render(objs, scene, rng)
            stem = f"{city}_{seq:06d}_000019"
            img_dir = tmp / "leftImg8bit" / split / city
            gt_dir = tmp / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            ann = polygons_json(objs, w, h)
            (gt_dir / f"{stem}_gtFine_polygons.json").write_text(json.dumps(ann, indent=1))
            label_ids, inst = rasterize({"height": h, "width": w, "objects": ann["objects"]})
            save_png(img_dir / f"{stem}_leftImg8bit.png", photo, compress_level=6)
            save_png(gt_dir / f"{stem}_gtFine_labelIds.png", label_ids, compress_level=6)
            save_png(gt_dir / f"{stem}_gtFine_instanceIds.png", inst.astype(np.int32), compress_level=6)
            save_png(gt_dir / f"{stem}_gtFine_color.png", color_image(label_ids), compress_level=6)
        (tmp / "README.md").write_text(
            f"SegLoop demo city: {n} procedurally generated frames (seed {seed}, {w}x{h}) in the Cityscapes layout.\n"
            "Made by `python -m ingest demo`. Labels follow configs/taxonomy/cityscapes.yaml.\n")
    return out
