# Two commands are the contract (see README.md):
#   make demo   venv + dependencies + demo data + every notebook executed on the demo cohort
#   make test   venv + dependencies + the whole test suite
# Both reuse the venv while pyproject.toml is unchanged (stamp file), so a second call is fast.

PYTHON     ?= python3
VENV       ?= .venv
# Installed before the package so that a CPU machine gets the CPU wheel. On a GPU machine point
# TORCH_INDEX at the CUDA wheel index you use, e.g. TORCH_INDEX="--index-url <your CUDA wheel index>".
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS     ?= test,viewer,bench
CONFIG     ?= configs/demo.yaml
RUN_OUT    ?= runs/demo

BIN   := $(VENV)/bin
STAMP := $(VENV)/.amt-stamp

.PHONY: help venv data demo test smoke lab bench clean-runs

help:
	@echo "make demo   - set up and execute all notebooks on the demo cohort (runs/demo/, figures/)"
	@echo "make test   - set up and run the test suite (includes a smoke run of the pipeline)"
	@echo "make lab    - open the notebooks (and the executed copies under runs/) in JupyterLab"
	@echo "make bench  - run the benchmark scripts (minutes; not part of the tests)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

venv: $(STAMP)

data: $(STAMP)
	$(BIN)/amt fetch

demo: data
	$(BIN)/amt run --config $(CONFIG) --out $(RUN_OUT)

test: $(STAMP)
	$(BIN)/amt fetch --scanner-files > /dev/null  # real scanner DICOM and demo CTs for the tests (cached)
	$(BIN)/python -m pytest

smoke: $(STAMP)
	$(BIN)/amt run --config configs/smoke.yaml --out runs/smoke

# Lab serves the project root (so runs/<name>/notebooks/, the executed copies, are in its file browser)
# and opens on notebooks/; a notebook's relative run_dir ("runs/demo") resolves against the project root.
# Its kernels (tools/jupyter/kernels/python3) record each step a notebook runs in that run folder's
# run.json (amtlib.pipeline.load_ipython_extension). As root (usual in containers) Jupyter needs
# --allow-root, added here with a line that says so.
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: $(STAMP)
	@if [ -n "$(LAB_ROOT_FLAG)" ]; then echo "make lab: running as root, so JupyterLab starts with --allow-root"; fi
	JUPYTER_PATH="$(CURDIR)/tools/jupyter$${JUPYTER_PATH:+:$$JUPYTER_PATH}" $(BIN)/jupyter lab $(LAB_ROOT_FLAG) \
		--ServerApp.root_dir="$(CURDIR)" --ServerApp.default_url=/lab/tree/notebooks

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-runs:
	rm -rf runs/
