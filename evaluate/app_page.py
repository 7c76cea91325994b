"""The Streamlit page of ``python -m evaluate app`` (run by ``streamlit run``; script arguments: the run folders
offered, ``--runs-dir``, ``--checkpoint``, ``--device``). Layout only: every computation is in
``evaluate.demo_app``, which the tests call directly.

Query parameters (bound widgets) make a view shareable: ``?opacity=1.0&threshold=0.3``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import streamlit as st

from core.errors import SegLoopError
from evaluate import demo_app as lib
from evaluate.app_server import MAX_UPLOAD_MB, TRAIN_FIX


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="app_page")
    p.add_argument("runs", nargs="*")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--checkpoint", default="best")
    p.add_argument("--device", default="auto")
    return p.parse_args(sys.argv[1:])


def _choices(args: argparse.Namespace) -> list[lib.RunChoice]:
    if args.runs:
        out = []
        for r in args.runs:
            try:
                out.append(lib.describe_run(r, args.checkpoint))
            except SegLoopError as exc:
                st.error(str(exc))
        return out
    choices, problems = lib.list_runs(args.runs_dir, args.checkpoint)
    for problem in problems:  # a corrupt run.json costs that run's entry, not the page
        st.error(problem)
    return choices


def _label(c: lib.RunChoice) -> str:
    return f"{c.name} ({c.task}, {c.dataset})" + ("" if c.trained else " - not trained")


def _image_source(dm: lib.DemoModel, key: str):
    """The upload if there is one, else the picked test image of the first run's dataset: (array, caption), or
    (None, note) when there is nothing to show."""
    up = st.sidebar.file_uploader("Upload a street photo (PNG or JPEG)", key=f"upload-{key}",
                                  max_upload_size=MAX_UPLOAD_MB)
    ds, images, note = lib.dataset_images(dm)
    st.sidebar.caption(note)
    picked = st.sidebar.selectbox("...or a test image of the run's dataset", [im["key"] for im in images],
                                  key=f"image-{key}", disabled=up is not None) if images else None
    if up is not None:
        try:
            return lib.decode_upload(up.getvalue(), up.name), up.name
        except SegLoopError as exc:
            st.error(f"Cannot use this upload: {exc}")
            return None, None
    if picked is None:
        return None, "upload an image in the sidebar"
    im = next(i for i in images if i["key"] == picked)
    return ds.load_image(im), picked


def _show(col, dm: lib.DemoModel, image, caption: str, opacity: float, threshold: float) -> None:
    with col:
        st.subheader(f"{dm.run.name} ({dm.task})")
        pred = lib.predict_cached(dm, image, threshold)
        st.image(lib.overlay(pred, dm.taxonomy, opacity), caption=f"{caption}: prediction", output_format="PNG")
        st.caption(f"inference {pred.seconds * 1000:.0f} ms on {dm.device.type} "
                   f"({pred.image.shape[1]} x {pred.image.shape[0]} px); checkpoint {dm.checkpoint.name}")
        rows = lib.legend(pred, dm.taxonomy)
        if rows:
            st.markdown("\n".join(
                f'<div class="legend-row"><span style="display:inline-block;width:14px;height:14px;'
                f'background:{r.hex};border:1px solid #000;margin-right:6px"></span>{r.name}: '
                f'{r.share:.1%}</div>' for r in rows), unsafe_allow_html=True)
        else:
            st.info(dm.app.empty_message)
        st.image(lib.uncertainty_image(pred), output_format="PNG",
                 caption=f"uncertainty ({dm.app.uncertainty_caption}); image: {pred.image_uncertainty:.3f}")
        if dm.app.has_detections:
            st.dataframe(lib.detections_table(pred, dm.taxonomy), hide_index=True)


def main() -> None:
    st.set_page_config(page_title="SegLoop model demo", layout="wide")
    st.title("SegLoop model demo")
    args = _args()
    choices = _choices(args)
    if not choices:
        st.error(f"No runs to show: no readable run under {Path(args.runs_dir).resolve()}. Fix: {TRAIN_FIX}")
        return
    labels = {_label(c): c for c in choices}
    trained = [label for label, c in labels.items() if c.trained]
    default = (trained or list(labels))[:2 if args.runs else 1]  # runs named on the command line: both shown
    picked = st.sidebar.multiselect("Runs (pick two to compare)", list(labels), default=default, max_selections=2)
    opacity = st.sidebar.slider("Overlay opacity", 0.0, 1.0, 0.6, 0.05, key="opacity", bind="query-params")
    threshold = st.sidebar.slider("Instance score threshold", 0.05, 0.95, lib.SCORE_THRESHOLD, 0.05,
                                  key="threshold", bind="query-params")
    models = []
    for label in picked:
        c = labels[label]
        if not c.trained:
            st.error(f"Run '{c.name}' has no checkpoint ({args.checkpoint}.pt) to show. Fix: "
                     + TRAIN_FIX.replace("<name>", c.name).replace("<run>", str(c.path)))
            continue
        try:
            with st.spinner(f"loading {c.name}"):
                models.append(lib.load_demo_model(c.path, args.checkpoint, args.device))
        except SegLoopError as exc:
            st.error(str(exc))
    if not models:
        return
    image, caption = _image_source(models[0], "main")
    if image is None:
        if caption:
            st.info(caption)
        return
    for col, dm in zip(st.columns(len(models)), models, strict=True):
        try:
            _show(col, dm, image, caption, opacity, threshold)
        except SegLoopError as exc:
            col.error(str(exc))


main()
