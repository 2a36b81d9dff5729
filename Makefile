# Two entry points: `make demo` and `make test`. Both create or reuse the project-local
# virtualenv in .venv; reinstalling happens only when pyproject.toml or constraints.txt change.
SHELL := /bin/bash
PYTHON ?= python3

# STACK=cpu (default): torch's CPU-only build 2.13.0+cpu, no nvidia-* wheels, no triton; about 2.5 GB.
#   openai-whisper is installed with --no-deps: its one other requirement is triton (GPU kernels only).
#   torch 2.13.0+cpu is not on PyPI: pip finds it where its own config points (this machine's find-links
#   folder), or on PyTorch's CPU wheel index given as PIP_EXTRA_INDEX_URL.
# STACK=cuda: the CUDA build of torch 2.14.1 with torchaudio and speechbrain (the ECAPA speaker backend)
#   in .venv-cuda, with constraints-cuda.txt; about 7 GB. `make test STACK=cuda` also runs the ECAPA tests.
STACK ?= cpu
ifeq ($(STACK),cuda)
VENV := .venv-cuda
CONSTRAINTS := constraints-cuda.txt
EXTRAS := dev,whisper,ecapa
NO_DEPS :=
# tests/test_install.py asserts a CUDA-free venv unless this is set
export GENSR_ALLOW_CUDA := 1
else ifeq ($(STACK),cpu)
VENV := .venv
CONSTRAINTS := constraints.txt
EXTRAS := dev
NO_DEPS := openai-whisper
else
$(error STACK=$(STACK): use STACK=cpu (the default) or STACK=cuda)
endif
BIN := $(VENV)/bin
STAMP := $(VENV)/.gensr-installed

# No network at run time: hubs are off, telemetry is off, Dagster state stays in the project.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export PYTHONHASHSEED := 0
# dvc.yaml stages call `gensr ...`: the venv's bin must come first on PATH.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo test bench dagster dagster-materialize-all mlflow-ui clean-venv

setup: $(STAMP)

# Disk of a first install (2026-12-05): STACK=cuda peaked at 7.3 GB of new disk use; the STACK=cpu venv is 2.5 GB
# (its peak was not measured: 3000 leaves some margin). Below MIN_FREE_MB it stops before pip starts instead of
# failing with ENOSPC minutes in. MIN_FREE_MB=0 skips the check.
ifeq ($(STACK),cuda)
MIN_FREE_MB ?= 7000
else
MIN_FREE_MB ?= 3000
endif
PIP := $(BIN)/pip --disable-pip-version-check
PIP_QUIET := 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@if [ "$(STACK)" = cpu ] && compgen -G "$(VENV)/lib/python*/site-packages/nvidia*" > /dev/null; then \
	  echo "$(VENV) holds the former CUDA stack (nvidia-* wheels): removing it to build the CPU-only one"; \
	  rm -rf $(VENV); \
	fi
	@if ! compgen -G "$(VENV)/lib/python*/site-packages/torch" > /dev/null; then \
	  free=$$(df -Pm . | awk 'NR==2 {print $$4}'); \
	  if [ "$$free" -lt "$(MIN_FREE_MB)" ]; then \
	    echo "error: the first install into $(VENV) needs about $$(( $(MIN_FREE_MB) / 1000 )) GB of disk, and $$(df -P . | awk 'NR==2 {print $$6}')" \
	         "has $$free MB free (MIN_FREE_MB=$(MIN_FREE_MB)); free some space, or run with MIN_FREE_MB=0 to try anyway" >&2; \
	    exit 1; \
	  fi; \
	fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the pinned $(STACK) stack into $(VENV) (first time: a few minutes)"
	@start=$$(date +%s); \
	{ $(PIP) install --quiet -c $(CONSTRAINTS) -e ".[$(EXTRAS)]" $(PIP_QUIET) || \
	  { [ "$(STACK)" = cuda ] || echo "pip failed. If it found no torch==2.13.0+cpu: point PIP_EXTRA_INDEX_URL" \
	      "at PyTorch's CPU wheel index (or PIP_FIND_LINKS at a folder with that wheel), or use STACK=cuda" >&2; \
	    exit 1; }; } && \
	{ [ -z "$(NO_DEPS)" ] || $(PIP) install --quiet --no-deps -c $(CONSTRAINTS) $(NO_DEPS) $(PIP_QUIET); } && \
	echo "install took $$(( $$(date +%s) - start )) s; venv size $$(du -sh $(VENV) | cut -f1)"
	@touch $(STAMP)

# The instance's config follows gensr_dagster/dagster.yaml (copied again whenever that file changes). It is not in
# the project root: `dagster dev` run there warns that a dagster.yaml in the current folder is ignored.
$(DAGSTER_HOME)/dagster.yaml: gensr_dagster/dagster.yaml
	@mkdir -p $(DAGSTER_HOME) && cp gensr_dagster/dagster.yaml $@

# After `dvc repro`, the Dagster UI is told what DVC built (gensr dagster-sync: runless materializations with
# metadata, md5s and data versions, plus the asset checks' results). Not a DVC stage: it writes only Dagster's
# store in $(DAGSTER_HOME), which DVC cannot track, and it reports nothing when nothing changed, so a no-op
# `dvc repro` stays a no-op and a wiped .dagster_home is refilled by the next sync.
demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dvc repro
	$(BIN)/gensr dagster-sync
	@echo ""
	@echo "demo page:   $(CURDIR)/reports/demo/index.html (opens from disk)"
	@echo "ablation:    $(CURDIR)/reports/ablation.md and reports/ablation.png"
	@echo "MLflow UI:   make mlflow-ui"
	@echo "Dagster UI:  make dagster   (http://127.0.0.1:3000)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

BENCH ?= all
bench: $(STAMP)  ## make bench BENCH="metrics sampling dpo"
	$(BIN)/python -m benchmarks $(BENCH)

dagster: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	@test ! -f dvc.lock || $(BIN)/gensr dagster-sync
	@# `dagster dev` warns that `dg dev` (dagster-dg-cli, not installed) supersedes it; dg needs a dg project
	@# layout this project does not have, so the warning is filtered rather than followed.
	PYTHONWARNINGS='ignore:Function `dev_command` is superseded' $(BIN)/dagster dev -h 127.0.0.1

# Everything from Dagster, the equivalent of `dvc repro`: one asset backfill of every asset and partition, run by
# the daemon of `make dagster` if it is up, else by a `dagster-daemon run` started until it ends (README, Dagster).
dagster-materialize-all: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/gensr dagster-materialize-all

# The UI opens experiments in the model-training view only with ?workflowType=machine_learning (MLflow 3
# defaults to its GenAI view): once the server answers, print that link to the ablation's experiment.
# GENSR_MLFLOW_PORT moves it (the links in summaries and Dagster metadata follow the same variable).
GENSR_MLFLOW_PORT ?= 5000
mlflow-ui: $(STAMP)
	@$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --host 127.0.0.1 \
	  --port $(GENSR_MLFLOW_PORT) & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null' INT TERM; \
	for _ in $$(seq 120); do \
	  $(BIN)/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$(GENSR_MLFLOW_PORT)/health', timeout=1)" \
	    2>/dev/null && break; \
	  kill -0 $$pid 2>/dev/null || break; sleep 1; \
	done; \
	if kill -0 $$pid 2>/dev/null; then \
	  echo; echo "MLflow UI (model-training view): $$(GENSR_MLFLOW_PORT=$(GENSR_MLFLOW_PORT) $(BIN)/python -m gensr.tracking url ablation 2>/dev/null)"; \
	  echo "all experiments: $$(GENSR_MLFLOW_PORT=$(GENSR_MLFLOW_PORT) $(BIN)/python -m gensr.tracking url 2>/dev/null)"; echo; \
	fi; \
	wait $$pid

clean-venv:  ## the venv of STACK (default .venv; STACK=cuda: .venv-cuda)
	rm -rf $(VENV)
