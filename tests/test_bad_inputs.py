"""Every kind of bad input, one row each, through the real command lines: exit status 2, one message naming the file
(or key, or option) and a fix, no traceback, and nothing half-written left behind.

Kinds: geometry (Cityscapes polygons), taxonomy, config values (training and data), counts (CLI options), names
that would leave their folder, and the file system (read-only folder, full disk, symlink loop, non-UTF-8 config,
corrupt manifest.json, permission denied). Commands run in-process through ``core.errors.run_cli`` (the same path as
``python -m ...``), except the file-system rows that need another mount or user: those run ``python -m ingest`` in a
subprocess, on a real read-only bind mount and a real 4 KiB tmpfs (a private mount namespace, ``unshare -rm``) where
the kernel allows it, else as an unprivileged user on a folder without write permission, or, for the full disk,
with writes failing with ENOSPC in-process.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import run_cli
from tests.conftest import ROOT

TRAIN_DEFAULT = ROOT / "configs" / "train" / "default.yaml"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


# ------------------------------------------------------------------------------------------------------ helpers


def _main(module: str) -> Callable[[list[str] | None], int]:
    if module == "ingest":
        from ingest.__main__ import main
    elif module == "train.run":
        from train.run import main
    elif module == "fiftyone_views":
        from fiftyone_views.__main__ import main
    else:  # pragma: no cover - a row naming a module this table does not know
        raise ValueError(module)
    return main


def run_in_process(capsys, module: str, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = run_cli(_main(module), [str(a) for a in argv])
    return rc, capsys.readouterr().err


def tree(folder: Path) -> list[str]:
    """Every path under ``folder`` (hidden ones included: a temporary folder left behind is a failure)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def assert_clean_error(rc: int, err: str, names: str, *words: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert names in err, f"{names!r} not named in: {err}"
    assert "fix" in err, err
    for w in words:
        assert w in err, f"{w!r} not in: {err}"


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    """A 6-frame demo city (one frame per city, every split present): small, so a build fails or succeeds fast."""
    from ingest.demo import generate

    return generate(tmp_path_factory.mktemp("bad") / "city", n=6, seed=0, size=(128, 64), progress=False)


@pytest.fixture
def work(tmp_path, city) -> dict[str, Path]:
    """A private copy of the city, a data config for it and an empty versions folder."""
    c = tmp_path / "city"
    shutil.copytree(city, c)
    cfg = tmp_path / "data.yaml"
    cfg.write_text(f"base: {ROOT}/configs/data/default.yaml\nname: bad\nsources:\n"
                   f"  - {{type: cityscapes, name: city, root: '{c}'}}\n")
    return {"city": c, "config": cfg, "versions": tmp_path / "versions", "tmp": tmp_path}


def _first_polygons(city: Path) -> Path:
    return sorted(city.glob("gtFine/train/*/*_gtFine_polygons.json"))[0]


# ------------------------------------------------------------------------------------------------------ geometry


def _two_points(o: dict) -> None:
    o["polygon"] = o["polygon"][:2]


def _nan_point(o: dict) -> None:
    o["polygon"][1] = [float("nan"), 3.0]


def _string_point(o: dict) -> None:
    o["polygon"][0] = ["12", "7"]


def _numeric_label(o: dict) -> None:
    o["label"] = 26


@pytest.mark.parametrize("spoil,words", [
    (_two_points, "at least 3 points"),
    (_nan_point, "not a finite number"),
    (_string_point, "not a number"),
    (_numeric_label, "no 'label' string"),
], ids=["two-points", "nan", "string-coordinates", "numeric-label"])
def test_bad_polygon_geometry(capsys, work, spoil, words):
    victim = _first_polygons(work["city"])
    data = json.loads(victim.read_text())
    spoil(data["objects"][-1])
    victim.write_text(json.dumps(data))  # json writes NaN as NaN, as some exporters do
    rc, err = run_in_process(capsys, "ingest", "build", "--config", work["config"], f"output={work['versions']}")
    assert_clean_error(rc, err, str(victim), words, f"object #{len(data['objects']) - 1}")
    assert tree(work["versions"]) == []  # no version, no temporary folder


# ------------------------------------------------------------------------------------------------------ taxonomy


CLASSES_OK = "classes:\n  - {name: road, color: [128, 64, 128]}\n  - {name: car, color: '#00008e'}\n"
SOURCES = "sources:\n  cityscapes: {road: road, car: car, '*': ignore}\n"


def _labels_with_duplicate_id() -> str:
    rows = (ROOT / "configs" / "taxonomy" / "cityscapes.yaml").read_text()
    return rows.replace('name: "sidewalk"              , id:   8', 'name: "sidewalk"              , id:   7')


TAXONOMIES = {
    "duplicate-label-id": (_labels_with_duplicate_id, "label ids must be unique"),
    "duplicate-class-name": (lambda: "classes:\n  - {name: car, color: [1, 2, 3]}\n  - {name: car, color: [4, 5, 6]}\n"
                             + SOURCES, "class names must be unique"),
    "ignore-is-a-class": (lambda: "ignore_index: 1\n" + CLASSES_OK + SOURCES, "ignore_index 1 is also the index"),
    "no-classes": (lambda: "classes: []\n" + SOURCES, "needs 1..255 classes"),
    "256-classes": (lambda: "classes:\n" + "".join(f"  - {{name: c{i}, color: [0, 0, 0]}}\n" for i in range(256)),
                    "needs 1..255 classes"),
    "colour-name": (lambda: "classes:\n  - {name: road, color: red}\n" + SOURCES, "'#ff0000'"),
    "colour-out-of-range": (lambda: "classes:\n  - {name: road, color: [300, 0, 0]}\n" + SOURCES, "0..255"),
    "colour-bad-hex": (lambda: "classes:\n  - {name: road, color: '#12345'}\n" + SOURCES, "'#rrggbb'"),
}


@pytest.mark.parametrize("kind", list(TAXONOMIES))
def test_bad_taxonomy(capsys, work, kind):
    text, words = TAXONOMIES[kind]
    tax = work["tmp"] / f"{kind}.yaml"
    tax.write_text(f"name: {kind}\n" + text())
    rc, err = run_in_process(capsys, "ingest", "build", "--config", work["config"], f"taxonomy={tax}",
                             f"output={work['versions']}")
    assert_clean_error(rc, err, str(tax), words)
    assert tree(work["versions"]) == []


# ------------------------------------------------------------------------------------------------ config values


def _no_gpu_device() -> str:
    """A device this machine lacks: cuda without a GPU, else a GPU index past the last one."""
    import torch

    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


TRAIN_VALUES = [
    ("train.batch_size=0", "train.batch_size", ">= 1"),
    ("optim.lr=-0.1", "optim.lr", "> 0"),
    ("train.eval_every=0", "train.eval_every", ">= 1"),
    ("train.epochs=0", "train.epochs", ">= 1"),
    ("train.log_every=0", "train.log_every", ">= 1"),
    ("data.image_size=[0,256]", "data.image_size", ">= 1"),
    ("data.workers=-1", "data.workers", ">= 0"),
    ("optim.weight_decay=-1", "optim.weight_decay", ">= 0"),
    ("schedule.warmup_steps=-5", "schedule.warmup_steps", ">= 0"),
    ("optim.name=adam", "optim.name", "did you mean 'adamw'"),
    ("loss.name=hinge", "loss.name", "cross_entropy"),
    ("loss.name=dice+dise", "loss.name", "did you mean 'dice'"),
    ("schedule.name=step", "schedule.name", "cosine"),
    ("train.device=tpu", "train.device", "auto, cpu, cuda"),
    ("DEVICE", "train.device", "nvidia-smi"),
    ("output.name=../../x", "output.name", "may not leave its parent folder"),
    ("output.name=.hidden", "output.name", "must not start with '.'"),
    ("data.version=../../x", "data.version", "not a dataset version folder"),
]


@pytest.mark.parametrize("override,key,words", TRAIN_VALUES, ids=[r[0] for r in TRAIN_VALUES])
def test_bad_training_config_value(capsys, tmp_path, override, key, words):
    if override == "DEVICE":
        override = f"train.device={_no_gpu_device()}"
    runs = tmp_path / "runs"
    rc, err = run_in_process(capsys, "train.run", f"output.runs_dir={runs}", override)
    assert_clean_error(rc, err, key, words, "command line")
    assert not runs.exists()  # rejected before a run folder or a dataset is touched


def test_bad_config_value_in_a_file_names_the_file(capsys, tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"base: {TRAIN_DEFAULT}\ntrain:\n  batch_size: -4\n")
    rc, err = run_in_process(capsys, "train.run", "--config", exp, f"output.runs_dir={tmp_path / 'runs'}")
    assert_clean_error(rc, err, str(exp), "train.batch_size", ">= 1")
    assert not (tmp_path / "runs").exists()


DATA_VALUES = [
    ("name=../escape", "name", "may not leave its parent folder"),
    ("name=a@b", "name", "'@'"),
    ("folds=1", "folds", "0 (none) or a whole number >= 2"),
    ("split.mode=random", "split.mode", "source, ratio"),
    ("split.ratios.val=-0.2", "split.ratios.val", ">= 0"),
    ("split.same_as={test: nowhere}", "split.same_as", "test: val"),
]


@pytest.mark.parametrize("override,key,words", DATA_VALUES, ids=[r[0] for r in DATA_VALUES])
def test_bad_data_config_value(capsys, work, override, key, words):
    rc, err = run_in_process(capsys, "ingest", "build", "--config", work["config"], f"output={work['versions']}",
                             override)
    assert_clean_error(rc, err, f"'{key}'", words)
    assert tree(work["versions"]) == [] and not (work["tmp"] / "escape").exists()


# ------------------------------------------------------------------------------------------------------ counts


COUNTS = [
    ("ingest", ["demo", "--out", "OUT", "--n", "0"], "--n"),
    ("ingest", ["demo", "--out", "OUT", "--n", "-3"], "--n"),
    ("ingest", ["rasterize", "OUT", "--workers", "0"], "--workers"),
    ("fiftyone_views", ["triptychs", "runs/none", "--n", "0", "--out", "GALLERY"], "--n"),
    ("fiftyone_views", ["relabel", "runs/none", "--k", "-1"], "--k"),
    ("fiftyone_views", ["relabel", "runs/none", "--k", "0"], "--k"),
    ("fiftyone_views", ["load", "runs/none", "--tag-k", "-2"], "--tag-k"),
    ("fiftyone_views", ["app", "runs/none", "--port", "70000"], "--port"),
]


@pytest.mark.parametrize("module,argv,option", COUNTS, ids=[" ".join(r[1][:1] + r[1][-2:]) for r in COUNTS])
def test_bad_count(capsys, tmp_path, module, argv, option):
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    (gallery / "index.html").write_text("the previous gallery")
    argv = [str(tmp_path / "out") if a == "OUT" else str(gallery) if a == "GALLERY" else a for a in argv]
    rc, err = run_in_process(capsys, module, *argv)
    assert rc == 2 and "Traceback" not in err, err
    assert f"argument {option}" in err and "fix:" in err, err
    assert not (tmp_path / "out").exists()
    assert tree(gallery) == ["index.html"] and (gallery / "index.html").read_text() == "the previous gallery"


# ------------------------------------------------------------------------------------------------- file system


def _probe(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


CAN_UNSHARE = shutil.which("unshare") is not None and _probe(
    ["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=4k none $d && umount $d && rmdir $d"])
# how to run a command that file permissions apply to: root ignores them unless it gives up the capabilities that
# override them (kept as uid 0, so the interpreter under /root stays readable)
UNPRIVILEGED = ([] if os.geteuid() != 0 else ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
                if shutil.which("setpriv") and _probe(["setpriv", "--bounding-set=-dac_override", "true"]) else None)


def _build(work: dict[str, Path], output: Path) -> str:
    return f"{sys.executable} -m ingest build --config {work['config']} output={output}"


def _sh(script: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), "sh", "-c", script], capture_output=True, text=True, cwd=ROOT, env=ENV,
                          timeout=120)


def test_read_only_folder(work):
    out = work["tmp"] / "ro"
    out.mkdir()
    if CAN_UNSHARE:  # a real read-only mount: EROFS
        proc = _sh(f"mount --bind {out} {out} && mount -o remount,ro,bind {out} && {_build(work, out / 'versions')}",
                   ["unshare", "-rm"])
        words = "read-only"
    elif UNPRIVILEGED is not None:  # a folder the user may not write to: EACCES
        out.chmod(0o555)
        proc, words = _sh(_build(work, out / "versions"), UNPRIVILEGED), "permission denied"
    else:
        pytest.skip("running as root without unshare or setpriv: nothing is read-only to root")
    assert_clean_error(proc.returncode, proc.stderr, str(out / "versions"), words)
    assert tree(out) == []


def test_full_disk(capsys, work, monkeypatch):
    out = work["tmp"] / "full"
    out.mkdir()
    if CAN_UNSHARE:  # a real 4 KiB tmpfs: the first file fits, the next write gets ENOSPC
        script = (f"mount -t tmpfs -o size=4k none {out} && {_build(work, out / 'versions')}; rc=$?; "
                  f"echo LEFT:$(cd {out} && find . -mindepth 1 | sort | tr '\\n' ' '); exit $rc")
        proc = _sh(script, ["unshare", "-rm"])
        rc, err, left = proc.returncode, proc.stderr, proc.stdout.split("LEFT:")[-1].split()
        assert left in ([], ["./versions"]), left  # the versions folder itself may stay; nothing in it
    else:  # the kernel allows no private mounts: every file write under the folder fails as on a full disk
        real = Path.write_bytes

        def full(self, data):
            if str(self).startswith(str(out)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", full)
        rc, err = run_in_process(capsys, "ingest", "build", "--config", work["config"], f"output={out / 'versions'}")
        assert tree(out / "versions") == []
    assert_clean_error(rc, err, str(out / "versions"), "no space left", "df -h")


def test_symlink_loop_config(capsys, work):
    loop = work["tmp"] / "loop.yaml"
    loop.symlink_to(work["tmp"] / "other.yaml")
    (work["tmp"] / "other.yaml").symlink_to(loop)
    rc, err = run_in_process(capsys, "ingest", "build", "--config", loop, f"output={work['versions']}")
    assert_clean_error(rc, err, str(loop), "symlink loop")
    assert tree(work["versions"]) == []


def test_symlink_loop_taxonomy(capsys, work):
    loop = work["tmp"] / "tax.yaml"
    loop.symlink_to(loop)
    rc, err = run_in_process(capsys, "ingest", "build", "--config", work["config"], f"taxonomy={loop}",
                             f"output={work['versions']}")
    assert_clean_error(rc, err, str(loop), "symlink")
    assert tree(work["versions"]) == []


def test_non_utf8_config(capsys, tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(f"base: {TRAIN_DEFAULT}\n# Gr\xfc\xdfe aus K\xf6ln\ntrain:\n  epochs: 1\n".encode("latin-1"))
    rc, err = run_in_process(capsys, "train.run", "--config", bad, f"output.runs_dir={tmp_path / 'runs'}")
    assert_clean_error(rc, err, str(bad), "not UTF-8", "byte 0xfc")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content,words", [
    ('{"format": 1, "version": "demo@0123456789ab", "crea', "does not parse as JSON (line 1"),
    ("[]", "lacks format"),
    (b"\xff\xfe{}", "not UTF-8"),
], ids=["truncated", "not-a-manifest", "binary"])
def test_corrupt_manifest(capsys, tmp_path, content, words):
    version = tmp_path / "versions" / "demo@0123456789ab"
    version.mkdir(parents=True)
    mf = version / "manifest.json"
    mf.write_bytes(content.encode() if isinstance(content, str) else content)
    for argv in (["show", "demo", "--root", tmp_path / "versions"], ["list", "--root", tmp_path / "versions"]):
        rc, err = run_in_process(capsys, "ingest", *argv)
        assert_clean_error(rc, err, str(mf), words, "build it again")


def test_permission_denied_config(tmp_path):
    if UNPRIVILEGED is None:
        pytest.skip("running as root without setpriv: permissions are not enforced")
    secret = tmp_path / "secret.yaml"
    secret.write_text(f"base: {ROOT}/configs/data/default.yaml\n")
    secret.chmod(0o000)
    proc = _sh(f"{sys.executable} -m ingest build --config {secret} output={tmp_path / 'v'}", UNPRIVILEGED)
    assert_clean_error(proc.returncode, proc.stderr, str(secret), "permission denied", "chmod")
    assert tree(tmp_path) == ["secret.yaml"]


# ----------------------------------------------------------------------------------- checkpoints and the model seam


class _RunsCode:
    """A pickle that would create a file when unpickled in full (what a crafted .pt does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_never_runs(capsys, tmp_path, demo_version):
    import torch

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "model_spec": {"name": "resunet"}, "payload": _RunsCode(marker)}, evil)
    runs = tmp_path / "runs"
    rc, err = run_in_process(capsys, "train.run", f"data.version={demo_version.path}", f"output.runs_dir={runs}",
                             f"model.weights={evil}")
    assert_clean_error(rc, err, str(evil), "refused to load", "posix.system")
    assert not marker.exists() and not runs.exists()


MODEL_ROWS = [
    ("model.args.widht=8", "widht", "did you mean 'width'"),
    ("model.name=unet3", "model.name", "convunext, ensemble, linknet, resunet, unet"),
    ("task=panoptik", "task", "semantic"),
    ("task=panoptic", "model.name", "conditional_detr, detr"),
]


# the semantic zoo's registries and settings: each refused in a second, before a run folder exists
ZOO_ROWS = [
    ("model.width=32", "model.width", "did you mean 'model.args.width'"),
    ("model.name=unet;model.args={encoder: resnet99}", "resnet99", "model.args.encoder must be one of"),
    ("model.name=unet;model.args={encoder: residual, encoder_args: {widht: 8}}", "widht", "did you mean 'width'"),
    ("model.args={head: sigmoid}", "sigmoid head", "19"),
    ("model.name=unet;model.args={encoder: resnet18, encoder_weights: /no/such.pth}", "/no/such.pth", "not found"),
    ("loss.name=bce", "loss bce is for a binary head", "cross_entropy"),
    ("loss.name=dice;loss.args={dice: {weight: -1}}", "loss.args.dice.weight", "positive number"),
    ("loss.name=focal;loss.args={focal: {gama: 2}}", "gama", "did you mean 'gamma'"),
    ("augment.transforms=[{name: GaussBlur}]", "GaussBlur", "GaussianBlur"),
    ("augment.transforms=[{name: GaussianBlur, sigma: 3}]", "no argument 'sigma'", "sigma_limit"),
    ("augment.copy_blob={p: 0.5, classes: [polee]}", "polee", "pole"),
    ("augment.copy_blob={p: 0.5, classes: [train]}", "train has no blob", "training images have"),
    ("train.freeze_encoder_epochs=2;task=instance;model.name=maskrcnn", "no encoder part to freeze", "unet"),
    ("train.freeze_encoder_epochs=5;train.epochs=1", "freezes all 1 epochs", "never train"),
    ("augment.transforms=[{name: RandomCrop, height: 999, width: 999}]", "RandomCrop fails on a", "data.image_size"),
    ("augment.transforms=[{name: Resize, height: 16, width: 16}]", "Resize turns a", "keep the size"),
    ("augment.transforms=[{name: Normalize}]", "float32", "normalises"),
    ("augment.transforms=[{name: ToTensorV2}]", "ToTensorV2 turns a", "8-bit"),
    ("loss.name=focal;loss.args={focal: {alpha: 2}}", "alpha must be a number in [0, 1]", "--models"),
    ("loss.name=cross_entropy+tversky;loss.args={tversky: {alpha: -3}}", "alpha must be a number >= 0", "tversky"),
    ("loss.class_weights=[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]", "no weight above 0", "loss.class_weights"),
    ("model.name=unet;model.args={encoder: efficientnet-lite0, encoder_weights: /no/such.pth}", "not found",
     "encoder_weights=imagenet"),
    ("model.name=unet;model.args={encoder: resnet18, encoder_weights: imagenet}", "no ImageNet weights ship",
     "state dict by path"),
]


@pytest.mark.parametrize("override,key,words", ZOO_ROWS, ids=[r[0] for r in ZOO_ROWS])
def test_bad_zoo_setting(capsys, tmp_path, demo_version, override, key, words):
    runs = tmp_path / "runs"
    rc, err = run_in_process(capsys, "train.run", f"data.version={demo_version.path}", f"output.runs_dir={runs}",
                             *override.split(";"))
    assert_clean_error(rc, err, key, words)
    assert not runs.exists()


@pytest.mark.parametrize("override,key,words", MODEL_ROWS, ids=[r[0] for r in MODEL_ROWS])
def test_bad_model_choice(capsys, tmp_path, demo_version, override, key, words):
    runs = tmp_path / "runs"
    rc, err = run_in_process(capsys, "train.run", f"data.version={demo_version.path}", f"output.runs_dir={runs}",
                             override)
    assert_clean_error(rc, err, key, words)
    assert not runs.exists()
