# SegLoop. Quick start: `make demo`, then `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONUNBUFFERED := 1

.PHONY: help install labelstudio browser demo triage loop-demo app dvc-demo test test-fast lint bench bench-labelstudio clean

help:
	@echo "make demo       install into $(VENV), generate + ingest the demo city, train, evaluate on test"
	@echo "make triage     after demo: FiftyOne dataset + views, triptychs, relabel list, report"
	@echo "make loop-demo  Label Studio loop: label, export, ingest, train briefly, push the next batch"
	@echo "make app        the model demo page in the browser (Streamlit on 127.0.0.1; RUNS=\"runs/a runs/b\")"
	@echo "make dvc-demo   the DVC pipeline in a throw-away git repo: repro, metrics, plots, push, clone + pull, no-op repro"
	@echo "make test       run the test suite (installs Label Studio into $(LS_VENV) and Debian's chromium first)"
	@echo "make labelstudio  install Label Studio into its own virtual environment"
	@echo "make test-fast  the tests not marked slow"
	@echo "make lint       ruff"
	@echo "make bench      the benchmarks under bench/ (CamVid ones need ../shared/data/camvid)"
	@echo "make bench-labelstudio  1,000 images through a real Label Studio, against label-studio-sdk"

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

# Label Studio is a large Django app with its own pins: it gets its own virtual environment.
LS_VENV ?= .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed
$(LS_STAMP): requirements-labelstudio.txt
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-labelstudio.txt
	touch $(LS_STAMP)

labelstudio: $(LS_STAMP)

# The browser tests drive Debian's chromium through Playwright (nothing downloads a browser build): installed with
# apt-get when missing (as root, or through sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests (apt-get)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q >/dev/null && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }

demo: $(STAMP)
	$(PY) -m ingest build --config configs/data/demo.yaml
	$(PY) -m train.run --config configs/experiments/demo.yaml output.name=demo output.exist_ok=true
	$(PY) -m evaluate run runs/demo --split test
	@echo
	@echo "demo done: runs/demo (tensorboard --logdir runs/demo/tb; metrics in runs/demo/eval/test/metrics.json)"

# Triage of the demo run: FiftyOne dataset and views, the 100 test triptychs and the worst 20, a relabel list, report.
triage: $(STAMP)
	@[ -f runs/demo/eval/test/per_image.csv ] || $(MAKE) demo
	$(PY) -m fiftyone_views load runs/demo --split test
	$(PY) -m fiftyone_views triptychs runs/demo --n 100 --seed 0
	$(PY) -m fiftyone_views triptychs runs/demo --n 20 --worst
	$(PY) -m fiftyone_views relabel runs/demo --view worst_miou --k 10
	$(PY) -m evaluate report runs/demo --out reports/demo
	@echo
	@echo "triage done: python -m fiftyone_views app runs/demo (http://127.0.0.1:5151/datasets/demo-test); reports/demo/report.html"

# The labeling loop end to end: Label Studio, a project, labels, export, merged dataset, training, next batch.
loop-demo: $(STAMP) $(LS_STAMP)
	@[ -d data/custom_city ] || $(PY) -m ingest demo --out data/custom_city --n 60 --seed 7
	$(PY) -m annotate server start
	$(PY) -m annotate project create --name loop-demo --taxonomy configs/taxonomy/cityscapes.yaml
	$(PY) tools/simulate_labeler.py --project loop-demo --images data/custom_city/leftImg8bit/train --n 12
	$(PY) -m annotate export --project loop-demo
	$(PY) -m ingest build --config configs/data/loop.yaml
	$(PY) -m train.run data.version=loop data.config=configs/data/loop.yaml train.epochs=3 output.name=loop output.exist_ok=true
	$(PY) -m evaluate predict runs/loop --images data/custom_city/leftImg8bit --name pool
	$(PY) -m annotate next --project loop-demo --run runs/loop --pool data/custom_city/leftImg8bit --k 8
	@echo
	@echo "open $$($(PY) -c 'from annotate.server import status; print(status()["url"])')/projects/ (admin@segloop.local; password in data/labelstudio/server/admin_password)"

# The model demo page: every trained run under runs/, or RUNS="runs/demo runs/maskrcnn-demo" side by side.
RUNS ?=
app: $(STAMP)
	$(PY) -m evaluate app $(RUNS)

# dvc.yaml end to end in a temporary git repository with a local remote. Stage commands call `python` from PATH,
# so the venv goes first.
dvc-demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) tools/dvc_demo.py

test: $(STAMP) $(LS_STAMP) browser
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5)"; exit 0; fi; exit $$rc

test-fast: $(STAMP) $(LS_STAMP) browser
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) bench/trainer_overhead.py
	$(PY) bench/ingest_speed.py
	$(PY) bench/metrics_speed.py
	$(PY) bench/compare.py
	$(PY) bench/ensemble.py
	$(PY) bench/camvid.py

# 1,000 generated images through a throw-away Label Studio: import, pre-annotations, 600 labelled, export, ingest;
# seconds and peak memory per stage beside label-studio-sdk doing the same import and push.
bench-labelstudio: $(STAMP) $(LS_STAMP)
	$(PY) bench/labelstudio_scale.py --n 1000 --label 600

clean:
	-[ -x $(PY) ] && $(PY) -m fiftyone_views db stop
	rm -rf runs data/versions data/fiftyone .pytest_cache
