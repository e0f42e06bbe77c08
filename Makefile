# The README's two commands: `make quickstart` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DATA   := data/synthetic
RUNS   := runs/quickstart
PYTEST_ARGS ?=

.PHONY: quickstart test venv clean

venv: $(VENV)/.installed

# Reinstall when the dependency list or the pinned versions change.
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

$(DATA)/nyu_depth_v2_labeled.mat: | venv
	$(PY) -m depthcore.data.synthetic --out $(DATA)

$(DATA)/nyu_cache_96.h5: $(DATA)/nyu_depth_v2_labeled.mat
	$(PY) -m depthcore.data.prepare nyu --src $< --out $@ --size 96 96 --split-file $(DATA)/splits.mat

# Both stages for both architectures on the synthetic dataset, then the test metrics.
quickstart: venv $(DATA)/nyu_cache_96.h5
	@for arch in unetpp_3m lraspp_3m; do \
	  $(PY) -m depthcore.train configs/quickstart_nyu.yaml --set model.name=$$arch --set train.out_dir=$(RUNS)/$$arch/nyu --test || exit $$?; \
	  $(PY) -m depthcore.train configs/quickstart_diw.yaml --set train.init_checkpoint=$(RUNS)/$$arch/nyu/best \
	      --set train.out_dir=$(RUNS)/$$arch/diw --test || exit $$?; \
	done

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(RUNS) $(DATA)
