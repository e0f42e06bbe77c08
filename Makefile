# The README's two commands: `make quickstart` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DATA   := data/synthetic
RUNS   := runs/quickstart
PYTEST_ARGS ?=

.PHONY: quickstart baseline synthetic-data test test-docker lint venv clean

venv: $(VENV)/.installed

# Reinstall when the dependency list or the pinned versions change.
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

# Regenerated whenever the folder was made by another generator version or with other settings
# (then the cache below is older than the .mat and is prepared again).
synthetic-data: venv
	$(PY) -m depthcore.data.synthetic --out $(DATA) --frames 600 --diw-train 500 --diw-test 200 --keep-current

$(DATA)/nyu_cache_96.h5: $(DATA)/nyu_depth_v2_labeled.mat
	$(PY) -m depthcore.data.prepare nyu --src $< --out $@ --size 96 96 --split-file $(DATA)/splits.mat

# The main job: a TPE + ASHA sweep over U-Net++ and LR-ASPP and both stages on a generated
# dataset in the real NYU/DIW file formats, tracked in MLflow (see README).
quickstart: venv
	$(PY) -m sweep.run search_spaces/quickstart.yaml --export --onnx-exporter torchscript --report

# No sweep: one two-stage training run per architecture (the matched 3 M pair), then the
# test metrics next to the constant-depth baseline.
baseline: synthetic-data
	$(MAKE) $(DATA)/nyu_cache_96.h5
	@for arch in unetpp_3m lraspp_3m; do \
	  $(PY) -m depthcore.train configs/quickstart_nyu.yaml --set model.name=$$arch --set train.out_dir=$(RUNS)/$$arch/nyu --test || exit $$?; \
	  $(PY) -m depthcore.train configs/quickstart_diw.yaml --set train.init_checkpoint=$(RUNS)/$$arch/nyu/best \
	      --set train.out_dir=$(RUNS)/$$arch/diw --test || exit $$?; \
	done

test: venv
	$(PY) -m pytest -m "not docker" $(PYTEST_ARGS)

# The compose stack (docker/): builds the images and runs a sweep on PostgreSQL, MLflow and a Ray
# head with two workers in containers. Needs a running dockerd (see README, "Run on a cluster").
test-docker: venv
	$(PY) -m pytest -m docker $(PYTEST_ARGS)

# Static checks (not part of make test): ruff and mypy over the packages, tests, benchmarks and examples.
lint: venv
	$(VENV)/bin/ruff check depthcore sweep tests benchmarks examples
	$(VENV)/bin/mypy depthcore sweep benchmarks examples

clean:
	rm -rf $(RUNS) $(DATA)
