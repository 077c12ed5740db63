# agencerdas — `make` alone lists the targets and the variables you can set.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
DATA        ?= data/demo
AUDIO_DIR   ?= $(DATA)/train/audio
RTTM_DIR    ?= $(DATA)/train/rttm
STORE       ?= store
VIEW        ?= default
JOBS        ?= $(shell nproc 2>/dev/null || echo 1)
PRESET      ?= optimized
RUN         ?= runs/$(PRESET)

.PHONY: help install features test

help: ## Show this help and the variables you can set
	@echo "agencerdas — speaker-diarization training on a content-addressed Zarr feature store"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: AUDIO_DIR=$(AUDIO_DIR) RTTM_DIR=$(RTTM_DIR) STORE=$(STORE) VIEW=$(VIEW) JOBS=$(JOBS)"
	@echo "           PRESET=$(PRESET) RUN=$(RUN)"

$(BIN)/agencerdas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel first, so nothing below pulls a multi-GB CUDA build of torch.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $@

install: $(BIN)/agencerdas ## Create .venv with torch (CPU) and the project (editable, with test extras)

features: install ## Build or update the feature store STORE from AUDIO_DIR (+ RTTM_DIR), JOBS processes
	$(BIN)/agencerdas features $(AUDIO_DIR) --rttm-dir $(RTTM_DIR) --store $(STORE) --view $(VIEW) --jobs $(JOBS)

test: install ## Run the test suite (CPU only, no network, a few minutes)
	$(BIN)/python -m pytest tests
