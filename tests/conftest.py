"""Shared fixtures: a small demo city, its dataset version, a tiny trained run, and the cityscapesScripts
reference (installed with --no-deps into a cache folder: it is a test oracle, never a runtime dependency)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.netutil import free_port

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DIR = ROOT / ".cache" / "reference"
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture(scope="session")
def cityscapes_reference():
    """Import path to cityscapesScripts 2.3.0 (+ pyquaternion), with numpy 2's removed ``in1d`` shimmed."""
    marker = REFERENCE_DIR / "cityscapesscripts" / "__init__.py"
    if not marker.is_file():
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(REFERENCE_DIR),
               "cityscapesscripts==2.3.0", "pyquaternion==0.9.9"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"could not install the cityscapesScripts reference: {proc.stderr[-2000:]}")
    # appended, not prepended: the package ships a 'typing' backport that must not shadow the standard library
    if str(REFERENCE_DIR) not in sys.path:
        sys.path.append(str(REFERENCE_DIR))
    if not hasattr(np, "in1d"):
        np.in1d = lambda a, b, invert=False: np.isin(a, b, invert=invert)  # removed in numpy 2.x
    import cityscapesscripts

    return cityscapesscripts


@pytest.fixture(scope="session")
def ls_brush_reference():
    """label_studio_sdk.converter.brush (SDK 2.1.2), loaded from its file: the SDK's package __init__ pulls in an
    HTTP client stack that the codec does not need, so only this module is imported."""
    import importlib.util

    path = REFERENCE_DIR / "label_studio_sdk" / "converter" / "brush.py"
    if not path.is_file():
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(REFERENCE_DIR),
               "label-studio-sdk==2.1.2"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"could not install the label-studio-sdk reference: {proc.stderr[-2000:]}")
    spec = importlib.util.spec_from_file_location("ls_sdk_brush", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def demo_city(tmp_path_factory) -> Path:
    from ingest.demo import generate

    return generate(tmp_path_factory.mktemp("demo") / "city", n=24, seed=0, size=(256, 128), progress=False)


@pytest.fixture(scope="session")
def versions_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("versions")


def demo_data_config(root: Path, versions: Path, *extra: str) -> dict:
    from ingest.version import load_data_config

    return load_data_config(ROOT / "configs" / "data" / "demo.yaml",
                            [f"sources=[{{type: cityscapes, name: demo_city, root: '{root}'}}]", f"output={versions}",
                             *extra])


@pytest.fixture(scope="session")
def demo_version(demo_city, versions_root):
    from ingest.version import DatasetVersion, build

    return DatasetVersion(build(demo_data_config(demo_city, versions_root), progress=False).path)


def tiny_overrides(version_path: Path, runs: Path, *extra: str) -> list[str]:
    return [f"data.version={version_path}", "data.image_size=[64,128]", "model.args={width: 16, depth: 2}",
            "train.epochs=2", "train.batch_size=4", "schedule.warmup_steps=2", f"output.runs_dir={runs}",
            "train.log_every=1", *extra]


@pytest.fixture(scope="session")
def tiny_run(demo_version, tmp_path_factory):
    from train.config import load_train_config
    from train.engine import train

    runs = tmp_path_factory.mktemp("runs")
    cfg = load_train_config(None, tiny_overrides(demo_version.path, runs, "output.name=tiny"))
    return train(cfg, progress=False)


@pytest.fixture(scope="session")
def evaluated_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run (named ``tiny``), evaluated on the demo test split with uncertainty maps. A copy, so
    that tests re-evaluating ``tiny_run`` with other options never change what this one holds."""
    import shutil

    from evaluate.runner import evaluate_run

    run_dir = tmp_path_factory.mktemp("evaluated") / tiny_run.run_dir.name
    shutil.copytree(tiny_run.run_dir, run_dir)
    evaluate_run(run_dir, "test", progress=False)
    return run_dir


INSTANCE = ["task=instance", "model.name=maskrcnn", "data.image_size=[128,256]",
            "model.args={backbone: resnet18, min_size: 128, max_size: 256, anchor_sizes: [16, 32, 64, 128, 256]}",
            "optim.lr=0.0005", "train.epochs=1", "train.batch_size=2", "augment.copy_paste=0.5", "train.grad_clip=10"]


def instance_overrides(version, runs, *extra: str) -> list[str]:
    base = [o for o in tiny_overrides(version, runs) if not o.startswith(("model.args", "data.image_size"))]
    return [*base, *INSTANCE, *extra]


@pytest.fixture(scope="session")
def instance_run(demo_version, tmp_path_factory):
    """A Mask R-CNN (resnet18-FPN, from scratch) trained for one short epoch on the demo version."""
    from train.config import load_train_config
    from train.engine import train

    runs = tmp_path_factory.mktemp("instance_runs")
    return train(load_train_config(None, instance_overrides(demo_version.path, runs, "output.name=mrcnn")),
                 progress=False)


@pytest.fixture(scope="session")
def evaluated_instance_run(instance_run, tmp_path_factory):
    """A copy of the instance run evaluated on the demo test split: (run folder, result of evaluate_run)."""
    import shutil

    from evaluate.runner import evaluate_run

    run = tmp_path_factory.mktemp("instance_eval") / "mrcnn"
    shutil.copytree(instance_run.run_dir, run)
    return run, evaluate_run(run, "test", progress=False)


YOLO = ["task=instance", "model.name=yolo11n-seg", "data.image_size=[64,128]", "optim.lr=0.01",
        "train.epochs=15", "train.batch_size=4", "schedule.warmup_steps=4", "augment.copy_paste=0.3",
        "ultralytics={nbs: 4, close_mosaic: 0}"]


def yolo_overrides(version, runs, *extra: str) -> list[str]:
    base = [o for o in tiny_overrides(version, runs) if not o.startswith(("model.args", "data.image_size"))]
    return [*base, *YOLO, *extra]


@pytest.fixture(scope="session")
def yolo_run(demo_version, tmp_path_factory):
    """YOLO11n-seg trained by Ultralytics' trainer for 15 short epochs (60 steps) on the demo version at 128 px,
    with every connection to a non-loopback address refused and recorded: ``(result, attempted connections)``."""
    from tests.netutil import no_outbound_connections
    from train.config import load_train_config
    from train.engine import train

    runs = tmp_path_factory.mktemp("yolo_runs")
    cfg = load_train_config(None, yolo_overrides(demo_version.path, runs, "output.name=yolo"))
    with no_outbound_connections() as attempts:
        result = train(cfg, progress=False)
    return result, attempts


@pytest.fixture(scope="session")
def evaluated_yolo_run(yolo_run, tmp_path_factory):
    """A copy of the YOLO run evaluated on the demo test split, offline: (run folder, result, attempts)."""
    import shutil

    from evaluate.runner import evaluate_run
    from tests.netutil import no_outbound_connections

    run = tmp_path_factory.mktemp("yolo_eval") / "yolo"
    shutil.copytree(yolo_run[0].run_dir, run)
    with no_outbound_connections() as attempts:
        result = evaluate_run(run, "test", progress=False)
    return run, result, attempts


@pytest.fixture(scope="session")
def fiftyone_db(tmp_path_factory):
    """FiftyOne isolated for the test session: a real mongod of SegLoop's on a temporary database folder, no user
    config, tracking off. Subprocesses reach the same mongod through ``fiftyone_subprocess_env``."""
    from fiftyone_views.db import DB_DIR_ENV, connect, stop_mongod

    home = tmp_path_factory.mktemp("fo_home")
    db = home / "db"
    os.environ[DB_DIR_ENV] = str(db)
    os.environ["FIFTYONE_CONFIG_PATH"] = str(home / "config.json")
    os.environ["FIFTYONE_APP_CONFIG_PATH"] = str(home / "app_config.json")
    os.environ.pop("FIFTYONE_DATABASE_URI", None)
    connect(db)
    yield home
    stop_mongod(db)


def fiftyone_subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a SegLoop CLI that uses FiftyOne in a subprocess: HOME isolated as well."""
    env = {k: v for k, v in os.environ.items() if k not in ("FIFTYONE_DATABASE_URI", "FIFTYONE_PRIVATE_DATABASE_PORT")}
    return {**env, "HOME": str(home), "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost", **extra}


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio on 127.0.0.1 for the whole test session.

    The data directory (database, admin user, legacy token) is made once per checkout in .cache/ by
    `label-studio init` and copied for each session, so a session's server starts in seconds; images are served
    from a per-session folder."""
    import shutil

    from annotate import server

    if not (server.LS_VENV / "bin" / "label-studio").is_file():
        pytest.fail("Label Studio is not installed: run `make labelstudio` (CI does it in .ci/run)")
    template = ROOT / ".cache" / "labelstudio-template"
    files_root = tmp_path_factory.mktemp("ls_files")
    os.environ["SEGLOOP_LOCAL_FILES_ROOT"] = str(files_root)
    if not (template / "token").is_file():
        shutil.rmtree(template, ignore_errors=True)
        server.init_data_dir(template)
    data_dir = tmp_path_factory.mktemp("ls") / "server"
    shutil.copytree(template, data_dir)
    os.environ["SEGLOOP_LABEL_STUDIO_DIR"] = str(data_dir)
    state = server.start(free_port(), data_dir)
    token = (data_dir / "token").read_text().strip()
    yield {"url": state["url"], "token": token, "files_root": files_root, "data_dir": data_dir}
    server.stop(data_dir)
