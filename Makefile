# Two entry points: `make demo` and `make test`. Both create or reuse the project-local
# virtualenv in .venv; reinstalling happens only when pyproject.toml or constraints.txt change.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
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

.PHONY: setup demo test bench dagster mlflow-ui clean-venv

setup: $(STAMP)

# A first install peaked at 7.3 GB of new disk use (2026-12-05); below MIN_FREE_MB it stops
# before pip starts instead of failing with ENOSPC minutes in. MIN_FREE_MB=0 skips the check.
MIN_FREE_MB ?= 7000

$(STAMP): pyproject.toml constraints.txt
	@if ! compgen -G "$(VENV)/lib/python*/site-packages/torch" > /dev/null; then \
	  free=$$(df -Pm . | awk 'NR==2 {print $$4}'); \
	  if [ "$$free" -lt "$(MIN_FREE_MB)" ]; then \
	    echo "error: the first install into $(VENV) needs about 7.3 GB of disk, and $$(df -P . | awk 'NR==2 {print $$6}')" \
	         "has $$free MB free (MIN_FREE_MB=$(MIN_FREE_MB)); free some space, or run with MIN_FREE_MB=0 to try anyway" >&2; \
	    exit 1; \
	  fi; \
	fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the pinned stack into $(VENV) (first time: a few minutes)"
	@start=$$(date +%s); \
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]" \
	  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) && \
	echo "install took $$(( $$(date +%s) - start )) s; venv size $$(du -sh $(VENV) | cut -f1)"
	@mkdir -p $(DAGSTER_HOME) && cp -n dagster.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true
	@touch $(STAMP)

# After `dvc repro`, the Dagster UI is told what DVC built (gensr dagster-sync: runless materializations with
# metadata, md5s and data versions, plus the asset checks' results). Not a DVC stage: it writes only Dagster's
# store in $(DAGSTER_HOME), which DVC cannot track, and it reports nothing when nothing changed, so a no-op
# `dvc repro` stays a no-op and a wiped .dagster_home is refilled by the next sync.
demo: $(STAMP)
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

dagster: $(STAMP)
	@test ! -f dvc.lock || $(BIN)/gensr dagster-sync
	$(BIN)/dagster dev -h 127.0.0.1

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

clean-venv:
	rm -rf $(VENV)
