"""``evaluate report``: a Markdown + HTML report generated from one or more runs.

Sections: the problem and classes; the dataset (sources, version, counts per split and class, example images with
their labels); each architecture (block diagram, parameters, size in memory, FLOPs at the training size); the exact
training command as typed and every hyperparameter with its meaning (taken from the comments of the default config)
and the reason for its value (the config's ``why:`` map); what each run covers (model, loss, data, augmentations,
metrics, TTA, folds) as a table a reviewer ticks; loss and metric definitions; train and validation loss curves and
one curve per validation metric; the per-class IoU (or AP) of the worst classes over the epochs; the comparison of
runs; the worst classes; a triptych gallery; the runtime environment; training and inference time; a bibliography.
Images are written beside the report; ``pdf=True`` prints the HTML page to ``report.pdf`` with headless Chromium.
"""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch
from PIL import Image

import tasks
from core.browser import CHROMIUM_ARGS, INSTALL, require_chromium
from core.config import flatten, load_with_bases
from core.errors import SegLoopError
from core.fsio import atomic_dir, read_json
from core.runs import ENSEMBLE, Run, check_output_folder, find_checkpoint
from evaluate.compare import Row, compare_runs, shown_names
from evaluate.compare import markdown as compare_markdown
from evaluate.curves import curve_pngs as _curve_pngs
from evaluate.curves import plot as _plot
from evaluate.gallery import make_triptychs
from evaluate.history import describe, history, plot_history, summary
from evaluate.results import EvalResults, read_eval_metrics, stale_evaluation
from evaluate.tables import code as _code
from evaluate.tables import html_page as _html
from evaluate.tables import table
from ingest.version import DatasetVersion
from train.checkpoint import load_model
from train.config import TRAIN_DEFAULT, WHY, shown_command

WORST_SHOWN = 5  # classes whose per-class curve is drawn

BIBLIOGRAPHY = [
    "M. Cordts et al. The Cityscapes Dataset for Semantic Urban Scene Understanding. CVPR 2016.",
    "G. Brostow, J. Fauqueur, R. Cipolla. Semantic object classes in video: a high-definition ground truth "
    "database (CamVid). Pattern Recognition Letters 30(2), 2009.",
    "O. Ronneberger, P. Fischer, T. Brox. U-Net: Convolutional Networks for Biomedical Image Segmentation. "
    "MICCAI 2015.",
    "K. He, X. Zhang, S. Ren, J. Sun. Deep Residual Learning for Image Recognition. CVPR 2016.",
    "A. Chaurasia, E. Culurciello. LinkNet: Exploiting Encoder Representations for Efficient Semantic "
    "Segmentation. VCIP 2017.",
    "A. Paszke, A. Chaurasia, S. Kim, E. Culurciello. ENet: A Deep Neural Network Architecture for Real-Time "
    "Semantic Segmentation. arXiv:1606.02147, 2016 (class weighting 1/ln(1.02 + p)).",
    "F. Milletari, N. Navab, S.-A. Ahmadi. V-Net: Fully Convolutional Neural Networks for Volumetric Medical "
    "Image Segmentation. 3DV 2016 (Dice loss).",
    "I. Loshchilov, F. Hutter. Decoupled Weight Decay Regularization (AdamW). ICLR 2019.",
    "I. Loshchilov, F. Hutter. SGDR: Stochastic Gradient Descent with Warm Restarts. ICLR 2017 (cosine schedule).",
    "A. Buslaev et al. Albumentations: Fast and Flexible Image Augmentations. Information 11(2), 2020.",
    "A. Paszke et al. PyTorch: An Imperative Style, High-Performance Deep Learning Library. NeurIPS 2019.",
    "T.-Y. Lin et al. Microsoft COCO: Common Objects in Context. ECCV 2014 (annotation format, RLE masks).",
    "M. Tkachenko et al. Label Studio: Data labeling software. 2020-2026. https://github.com/HumanSignal/label-studio",
]

DEFINITIONS = """\
- **Loss**: each run's terms and weights are in its coverage table, defined by the loss classes themselves; pixels
  with the ignore value (255) never count. `loss.class_weights: auto` (ENet) weights class c by 1 / ln(1.02 + p_c),
  p_c its share of training pixels; the weights a run trained with are in its `run.json`.
- **Confusion matrix** M (rows ground truth, columns prediction), accumulated over all images, ignored pixels left
  out. TP_c = M[c, c], FP_c = sum of column c - TP_c, FN_c = sum of row c - TP_c.
- **Pixel accuracy** = sum TP_c / sum M. **IoU_c** = TP_c / (TP_c + FP_c + FN_c).
  **Dice_c** = 2 TP_c / (2 TP_c + FP_c + FN_c). **mIoU** and **mean Dice** average over the classes whose
  denominator is not zero (as cityscapesScripts does); a class predicted but absent counts with IoU 0.
- Per-image scores use the same formulas on one image's matrix."""


def config_explanations() -> dict[str, str]:
    """key -> the comment beside it in configs/train/default.yaml (the config documents itself)."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in TRAIN_DEFAULT.read_text().splitlines():
        m = re.match(r"^(\s*)([A-Za-z_]+):(.*)$", line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        full = ".".join([k for _, k in stack] + [key])
        if "#" in rest:
            out[full] = rest.split("#", 1)[1].strip()
        stack.append((indent, key))
    return out


def _model_args_help(spec: dict[str, Any]) -> dict[str, str]:
    """Meaning of each of a model's arguments, from its registry entry's docstring."""
    models = tasks.get(spec["task"]).training().models
    return models.describe(spec["name"]) if spec["name"] in models else {}


def _load_run(run: Path) -> dict[str, Any]:
    info = Run(run).info()  # the one reader of run.json: a folder without one, or a broken one, says so
    metrics = Run(run).read_metrics()
    if not metrics:
        print(f"note: {Run(run).metrics_path} is missing or empty: the report has no curves for {run.name}")
    test = run / "eval" / "test" / "metrics.json"
    if not test.is_file():
        raise SegLoopError("run has no test evaluation", path=run,
                           fix=f"python -m evaluate run {run} --split test")
    test_metrics = read_eval_metrics(test, run, "test")
    problem = tasks.get(Run(run).task).evaluation().result_problem(test_metrics)
    if problem:
        raise SegLoopError(f"the test metrics.json {problem}", path=test,
                           fix=f"evaluate the run again: python -m evaluate run {run} --split test")
    stale = stale_evaluation(run, test_metrics)
    if stale:
        raise SegLoopError(f"{stale}: the report would put old figures beside the new run", path=test,
                           fix=f"python -m evaluate run {run} --split test")
    model, ckpt = load_model(find_checkpoint(run, "best"))
    if Run(run).torn_metrics_line():
        print(f"note: the last line of {Run(run).metrics_path} could not be read (a write cut short by a kill); "
              f"the curves leave it out")
    hw = tuple(ckpt["config"]["data"]["image_size"])
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(tasks.get(ckpt["model_spec"]["task"]).evaluation().flops_input(hw))
    params = sum(p.numel() for p in model.parameters())
    size_mb = (sum(p.numel() * p.element_size() for p in model.parameters())
               + sum(b.numel() * b.element_size() for b in model.buffers())) / 2**20
    return {"dir": run, "name": run.name, "info": info, "curve": metrics, "test": test_metrics,
            "config": ckpt["config"], "spec": ckpt["model_spec"], "params": params, "size_mb": size_mb,
            "gflops": fc.get_total_flops() / 1e9, "hw": hw, "taxonomy": ckpt["taxonomy"],
            "report": tasks.get(ckpt["model_spec"]["task"]).report()}


def _class_curves_png(run: dict[str, Any], path: Path) -> str | None:
    """The per-class validation score (the task's per-class metric: IoU, AP) over the epochs for the run's worst
    test classes; its label, or None when the run recorded no per-class scores."""
    key, label = tasks.get(run["spec"]["task"]).per_class_metric
    if not any(isinstance(m.get(key), dict) for m in run["curve"]):
        return None
    seen = {n for m in run["curve"] for n in (m.get(key) or {})}
    worst = [n for n in run["test"].get("worst_classes", []) if n in seen][:WORST_SHOWN]
    if not worst:
        last = run["curve"][-1].get(key) or {}
        worst = sorted((n for n, v in last.items() if v is not None), key=lambda n: last[n])[:WORST_SHOWN]
    ep = [m["epoch"] for m in run["curve"]]
    _plot(path, f"{run['name']}: validation {label} of the worst test classes", label,
          [(n, ep, [(m.get(key) or {}).get(n) for m in run["curve"]], "-") for n in worst])
    return label


def _examples(ds: DatasetVersion, out: Path, n: int = 3) -> list[str]:
    names = []
    for i, im in enumerate(ds.images("train")[:n]):
        img, label = ds.load_image(im), ds.load_semantic(im)
        panel = np.concatenate([img, ds.taxonomy.colorize(label)], 1)
        name = f"example_{i}.png"
        Image.fromarray(panel).save(out / name)
        names.append(name)
    return names


def _environment() -> list[tuple[str, str]]:
    import numpy
    import torchvision

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return [("Python", platform.python_version()), ("torch", torch.__version__),
            ("torchvision", torchvision.__version__), ("numpy", numpy.__version__), ("CPU", cpu),
            ("CPU threads", str(torch.get_num_threads())), ("GPU", gpu), ("OS", platform.platform())]


def _chromium() -> str:
    """Chromium and Playwright, checked before anything is written: printing needs both."""
    try:
        exe = str(require_chromium("--pdf (the report printed by a browser)"))
    except SegLoopError as exc:
        raise SegLoopError(exc.message, path=exc.path,
                           fix=f"{INSTALL} (or leave out --pdf: report.html prints from any browser)") from None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise SegLoopError("--pdf drives Chromium through Playwright, which is not installed",
                           fix="pip install playwright (no browser download is needed)") from None
    return exe


def print_pdf(html_file: Path, pdf: Path, chromium: str) -> None:
    """``report.html`` printed by headless Chromium (the page as a browser shows it, images included)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(html_file.resolve().as_uri())
                page.wait_for_load_state("load")
                page.pdf(path=str(pdf), format="A4", print_background=True,
                         margin={"top": "12mm", "bottom": "12mm", "left": "10mm", "right": "10mm"})
            finally:
                browser.close()
    except PlaywrightError as exc:  # a Chromium that does not start, or a page that does not load in time
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SegLoopError(f"Chromium could not print the report: {first}", path=chromium,
                           fix=f"check that `{chromium} --headless --dump-dom about:blank` runs, or leave out --pdf"
                           ) from None


def build_report(runs: list[str | Path], out: str | Path, gallery: int = 6, pdf: bool = False) -> Path:
    """Write ``report.md``, ``report.html`` (and ``report.pdf``) with their images into ``out``, all at once: a run
    that is not evaluated, or a missing Chromium for ``pdf``, fails before anything is written."""
    out = check_output_folder(out, "a report", "report.md", {"report.md", "report.html", "report.pdf", "gallery"},
                              (".png",))
    chromium = _chromium() if pdf else None
    seen: dict[Path, str] = {}
    for r in runs:
        key = Path(r).resolve()
        if key in seen:
            raise SegLoopError(f"run {r} is given twice (as {seen[key]} and {r})", path=r,
                               fix="name each run once")
        seen[key] = str(r)
    loaded = [_load_run(Path(r)) for r in runs]
    for r, name in zip(loaded, shown_names([r["dir"] for r in loaded]), strict=True):
        r["name"] = name  # fold0 of two groups: two sections must not read alike
    first = loaded[0]
    for r in loaded[1:]:  # one comparison table ranks classes of one taxonomy: runs of another do not compare
        theirs, ours = r["taxonomy"], first["taxonomy"]
        if [c["name"] for c in theirs["classes"]] != [c["name"] for c in ours["classes"]]:
            raise SegLoopError(f"run {r['name']} was trained on taxonomy '{theirs['name']}' "
                               f"({len(theirs['classes'])} classes), run {first['name']} on '{ours['name']}' "
                               f"({len(ours['classes'])}); their figures do not compare in one report", path=r["dir"],
                               fix="report runs of the same taxonomy together (one report per taxonomy)")
    for r in loaded[1:]:  # figures of different test sets do not compare either
        if r["test"]["dataset_version"] != first["test"]["dataset_version"]:
            raise SegLoopError(f"run {r['name']}'s test evaluation is on {r['test']['dataset_version']}, run "
                               f"{first['name']}'s on {first['test']['dataset_version']}: figures of different test "
                               f"sets do not compare in one table", path=r["dir"] / "eval" / "test",
                               fix=f"evaluate both on one version: python -m evaluate run RUN --split test --version "
                                   f"{first['test']['dataset_version']} --replace")
    ds = EvalResults(first["dir"], "test").version  # the version the compared test figures were scored on
    m = ds.manifest
    expl = config_explanations()
    with atomic_dir(out, replace=True) as tmp:
        examples = _examples(ds, tmp)
        curves = _curve_pngs(loaded, tmp)
        for i, r in enumerate(loaded, 1):
            r["class_png"] = f"class_curves_{i}.png"
            r["class_label"] = _class_curves_png(r, tmp / r["class_png"])
            stages, notes = history(r["dir"])  # a run started from another's weights: its curve from the first epoch
            r["history"] = summary(stages, notes)
            if len(stages) > 1 and any(s.records for s in stages):
                r["history_png"] = f"history_{i}.png"
                plot_history(stages, tmp / r["history_png"])
        archs: dict[str, dict] = {}
        for r in loaded:
            key = json.dumps(r["spec"], sort_keys=True)
            if key not in archs:
                archs[key] = r
                r["report"].architecture_png(r["spec"], r["hw"], tmp / f"arch_{len(archs)}.png")
                r["arch_png"] = f"arch_{len(archs)}.png"
            else:
                r["arch_png"] = archs[key]["arch_png"]
        gal_dir, _, _ = make_triptychs(first["dir"], "test", n=gallery, seed=0, out=tmp / "gallery")
        gallery_pngs = sorted(p.name for p in gal_dir.glob("*.png"))
        comparison, skipped = compare_runs([r["dir"] for r in loaded], "test")
        for line in skipped:  # every run was read above, so this is a file changed meanwhile: said, not hidden
            print(f"note: the comparison table leaves out {line}")
        md = _markdown(loaded, ds, m, expl, examples, gallery_pngs, curves, comparison)
        (tmp / "report.md").write_text(md)
        (tmp / "report.html").write_text(_html(md, f"SegLoop report: {', '.join(r['name'] for r in loaded)}"))
        if chromium:
            print_pdf(tmp / "report.html", tmp / "report.pdf", chromium)
    return out


def _reasons(cfg: dict[str, Any], defaults: dict[str, Any]) -> dict[str, str]:
    """key -> why it has its value: the config's ``why:`` reason (a reason for a section covers its keys), else
    ``default`` where the value is the default one, else ``not given``."""
    why = flatten(cfg.get(WHY) or {})
    out = {}
    for key, value in flatten({k: v for k, v in cfg.items() if k != WHY}).items():
        parts = key.split(".")
        given = next((why[".".join(parts[:i])] for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in why), None)
        out[key] = given or ("default" if key in defaults and defaults[key] == value else "not given")
    return out


def _coverage(r: dict[str, Any], ds: DatasetVersion) -> dict[str, str]:
    """What one run covers, aspect by aspect, for the reviewer's checklist."""
    cfg, spec, test = r["config"], r["spec"], r["test"]
    args = ", ".join(f"{k}={v}" for k, v in spec["args"].items())
    model = f"{spec['name']} ({spec['task']}; {args or 'default arguments'}), {r['params'] / 1e6:.2f} M parameters"
    part = r["report"]
    loss = part.loss(cfg, r["curve"])
    fold = cfg["data"]["fold"]
    same = r["info"]["dataset_version"] == ds.version
    if fold is not None:  # a fold run trains and validates on its fold's halves of train, not on the splits
        halves = ds.fold(fold) if same else {}
        sizes = f" ({len(halves.get('train', []))} / {len(halves.get('val', []))} images)" if halves else ""
        data = (f"{r['info']['dataset_version']}; trained on fold {fold}'s train, validated on its val{sizes}, "
                f"tested on 'test'; size {cfg['data']['image_size']}")
    else:
        counts = ds.manifest["counts"] if same else {}
        splits = ", ".join(f"{counts[s]['images']} {s}" for s in counts) if counts else ""
        data = (f"{r['info']['dataset_version']} ({splits} images); trained on '{cfg['data']['train_split']}', "
                f"validated on '{cfg['data']['val_split']}', tested on 'test'; size {cfg['data']['image_size']}")
    augs = [] if r["info"].get("overfit") else part.augmentations(spec, cfg)  # the overfit check augments nothing
    metrics = part.metrics(test)
    metrics.append(f"inference time ({test['timing']['device']})" if "timing" in test else "")
    chosen = r["info"].get("train_images") or {}
    if (r["dir"] / ENSEMBLE).is_file():  # its members trained; the ensemble only combines them
        members = read_json(r["dir"] / ENSEMBLE, "ensemble.json").get("members") or []
        each = (f"an ensemble of {len(members)} runs ({', '.join(Path(m).name for m in members)}), each trained on "
                f"its own images")
        data = f"{r['info']['dataset_version']}; {each}; tested on 'test'; size {cfg['data']['image_size']}"
        return {"model": model, "loss": "its members' (see their reports)", "data": data,
                "augmentations": "its members'", "metrics": ", ".join(m for m in metrics if m),
                "TTA": "horizontal flip averaged" if test.get("tta") else "none (single forward pass)",
                "folds": each, "training images": each, "stopping": "none: an ensemble trains no epoch"}
    return {"model": model, "loss": loss, "data": data, "augmentations": "; ".join(augs) or "none",
            "metrics": ", ".join(m for m in metrics if m),
            "TTA": "horizontal flip averaged" if test.get("tta") else "none (single forward pass)",
            "folds": (f"fold {fold}: folds/fold{fold}.json's train / val" if fold is not None
                      else "none: the version's fixed train / val / test split"),
            "training images": (f"{chosen.get('count')} chosen by {chosen.get('from')} (ids sha256 "
                                f"{str(chosen.get('ids_sha256', ''))[:12]})" if chosen else
                                f"all of '{cfg['data']['train_split']}'"),
            "stopping": _stopping(r["info"], cfg)}


def _stopping(info: dict[str, Any], cfg: dict[str, Any]) -> str:
    """How the run's training ended and where its peak (best.pt) was, in words."""
    peak = (f"peak val {info.get('best_metric')} {info['best_value']:.4f} at epoch {info.get('best_epoch')}"
            + (f" (step {info['best_step']})" if isinstance(info.get("best_step"), int) else "")
            if isinstance(info.get("best_value"), (int, float)) else "")
    if info.get("stopped"):
        how = str(info["stopped"])
    elif info.get("stopped_by_time_limit"):
        how = f"time limit ({cfg['train']['time_limit']} minutes)"
    elif info.get("overfit"):
        how = f"the overfit check's {cfg['train']['overfit_steps']} steps (train.overfit_steps) ran out"
    else:
        how = f"all {cfg['train']['epochs']} epochs"
    return "; ".join(x for x in (how, peak) if x)


def _markdown(runs: list[dict], ds: DatasetVersion, m: dict, expl: dict[str, str], examples: list[str],
              gallery: list[str], curves: list[tuple[str, str]], comparison: list[Row]) -> str:
    tax = ds.taxonomy
    splits = list(m["counts"])
    s: list[str] = [f"# SegLoop report: {', '.join(r['name'] for r in runs)}", ""]
    s += ["## Problem", "",
          f"Semantic segmentation of street scenes: every pixel gets one of {tax.num_classes} classes of the "
          f"'{tax.name}' taxonomy (pixels labelled void are ignored, value {tax.ignore_index}).", "",
          table(["index", "class", "colour", "instances"],
                 [[c.index, c.name, c.hex, "yes" if c.has_instances else ""]
                  for c in tax.classes]), ""]
    s += ["## Dataset", "", f"Version `{m['version']}` (created {m['created']}), split rule `{m['split']['mode']}` "
          f"(seed {m['split']['seed']}).", ""]
    s += [table(["source", "type", "root", "images", "content hash"],
                 [[x["name"], x["type"], x["root"], x["images"], x["content_hash"][:12]] for x in m["sources"]]), ""]
    s += [table(["class"] + [f"{sp} images" for sp in splits] + [f"{sp} instances" for sp in splits],
                 [["(all)"] + [m["counts"][sp]["images"] for sp in splits]
                  + [m["counts"][sp]["instances"] for sp in splits]]
                 + [[c.name] + [m["counts"][sp]["images_per_class"].get(c.name, 0) for sp in splits]
                    + [m["counts"][sp]["instances_per_class"].get(c.name, 0) for sp in splits] for c in tax.classes]),
          "", "Examples (image | label):", ""]
    s += [f"![example]({e})" for e in examples] + [""]
    s += ["## Architectures", ""]
    for r in runs:
        s += [f"### {r['name']}: {r['spec']['name']}", "", f"![architecture of {r['name']}]({r['arch_png']})", "",
              f"{r['params'] / 1e6:.2f} M parameters, {r['size_mb']:.1f} MB in memory (fp32 weights and buffers), "
              f"{r['gflops']:.2f} GFLOPs per image at the training size {r['hw'][0]}x{r['hw'][1]}.", ""]
    defaults = flatten(load_with_bases(TRAIN_DEFAULT))
    s += ["## Training", ""]
    for r in runs:
        model_expl = {f"model.args.{k}": v for k, v in _model_args_help(r["spec"]).items()}
        reasons = _reasons(r["config"], defaults)
        s += [f"### {r['name']}", "", "Training history (`python -m evaluate history`): "
              + "; ".join(describe(r["history"])) + ".", ""]
        s += [f"![training history of {r['name']}]({r['history_png']})", ""] if r.get("history_png") else []
        s += ["Command:", "", "```", shown_command(r["info"].get("command", "")), "```", "",
              table(["key", "value", "meaning", "why"],
                     [[_code(k), _code(v), expl.get(k, model_expl.get(k, "")), reasons[k]]
                      for k, v in flatten({k: v for k, v in r["config"].items() if k != WHY}).items()]), ""]
    s += ["## Coverage (tick what you have checked)", "",
          "What each run covers; a reviewer ticks an aspect once its entry is checked against the run's config and "
          "results.", ""]
    cover = {r["name"]: _coverage(r, ds) for r in runs}
    aspects = list(next(iter(cover.values())))
    s += [table(["aspect", *cover, "reviewed"], [[a, *(c[a] for c in cover.values()), "[ ]"] for a in aspects]), ""]
    s += ["## Loss and metrics", "", DEFINITIONS, ""]
    s += ["## Curves", ""]
    s += [f"![{caption}]({name})" for name, caption in curves] + [""]
    s += ["### Per-class scores of the worst classes over the epochs", ""]
    for r in runs:
        s += ([f"![{r['name']}: per-class validation {r['class_label']} over the epochs]({r['class_png']})"]
              if r["class_label"] else [f"{r['name']}: no per-class validation scores were recorded."])
    s += [""]
    s += ["## Comparison (test split)", "",
          "Semantic and instance runs share the thing-class mIoU (an instance model's masks painted into a class "
          "map, higher scores on top); mask AP is COCO's (IoU .50:.95), equal to pycocotools' COCOeval. The table "
          "is `python -m evaluate compare`'s.", "", compare_markdown(comparison), ""]
    s += ["## Worst classes", ""]
    for r in runs:
        s += r["report"].worst_classes(r["name"], r["test"])
    s += ["## Gallery (test images, image | ground truth | prediction)", ""]
    s += [f"![{g}](gallery/{g})" for g in gallery] + ["", "All: [gallery/index.html](gallery/index.html)", ""]
    s += ["## Runtime environment", "", table(["", ""], _environment()), ""]
    s += ["## References", ""] + [f"{i}. {b}" for i, b in enumerate(BIBLIOGRAPHY, 1)] + [""]
    return "\n".join(s)
