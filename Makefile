# agencerdas — `make` alone lists the targets and the variables you can set.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
DEMO_SIZE   ?= default
DATA        ?= data/demo-$(DEMO_SIZE)
# RTTMs default to the demo corpus only while AUDIO_DIR does; a user's AUDIO_DIR brings its RTTMs
# along (beside the audio unless RTTM_DIR says otherwise), as `agencerdas features` itself does.
ifeq ($(origin AUDIO_DIR),undefined)
  AUDIO_DIR := $(DATA)/train/audio
  RTTM_DIR  ?= $(DATA)/train/rttm
  # The demo names its voices across recordings and holds some out of training (--heldout-voices):
  # validation gets those, voices the train split never has.
  SPLIT_BY  ?= voices
else
  RTTM_DIR  ?= $(AUDIO_DIR)
endif
# The torch requirement, pinned in the same pip resolution as the project so the project's
# range never swaps the build pip chose for a newer one (a multi-GB CUDA build on a CPU machine).
TORCH       ?= torch==2.13.0
TEST_DIR    ?= $(DATA)/test
STORE       ?= store
VIEW        ?= default
JOBS        ?= $(shell nproc 2>/dev/null || echo 1)
PRESET      ?= optimized
RUN         ?= runs/$(PRESET)
MODEL       ?= $(RUN)/best.pt
GPUS        ?= 1
AUDIO       ?= $(TEST_DIR)/audio/*
OUT         ?= $(RUN)/diarized
BENCH_SIZE  ?= small
TB_DIR      ?= runs
SPLIT_BY    ?= recordings

# Every other NAME=VALUE on the command line is a training override (EPOCHS=3 BATCH=8 LR=5e-4 ...):
# the trainer rejects unknown names and lists the valid ones.
MAKE_VARS := PYTHON VENV TORCH DEMO_SIZE DATA AUDIO_DIR RTTM_DIR TEST_DIR STORE VIEW JOBS PRESET RUN MODEL GPUS AUDIO OUT \
             BENCH_SIZE RESUME OVERWRITE SCHEDULER PSEUDO_LABELS TB_DIR SPLIT_BY EVAL_FLAGS
OVERRIDES := $(filter-out $(addsuffix =%,$(MAKE_VARS)),$(MAKEOVERRIDES))
TRAIN_CMD := $(if $(filter-out 1,$(GPUS)),$(BIN)/torchrun --standalone --nproc_per_node=$(GPUS) -m agencerdas,$(BIN)/agencerdas)

# small: recordings longer than the optimized window (75 s), so every preset finds whole windows
ifeq ($(DEMO_SIZE),small)
  SIM_TRAIN := --n 24 --min-duration 80 --max-duration 120 --heldout-voices 6
  SIM_TEST  := --n 6 --min-duration 80 --max-duration 120
  SIM_MANY  := --n 4 --min-duration 80 --max-duration 120
else
  SIM_TRAIN := --n 135 --min-duration 60 --max-duration 240 --heldout-voices 6
  SIM_TEST  := --n 20 --min-duration 60 --max-duration 240
  SIM_MANY  := --n 20 --min-duration 60 --max-duration 240
endif
SIM_COMMON := --formats wav,flac,ogg,mp3 --rates 16000,22050,44100 --jobs $(JOBS)

.PHONY: help install corpus features train evaluate diarize plot tensorboard demo test bench bench-gpu gpu-check

help: ## Show this help and the variables you can set
	@echo "agencerdas — speaker-diarization training on a content-addressed Zarr feature store"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo
	@echo "Variables (current value):"
	@echo "  AUDIO_DIR=$(AUDIO_DIR) RTTM_DIR=$(RTTM_DIR) STORE=$(STORE) VIEW=$(VIEW) JOBS=$(JOBS)"
	@echo "  PRESET=$(PRESET) (original | optimized | ultra-fast | throughput) RUN=$(RUN) MODEL=$(MODEL) GPUS=$(GPUS)"
	@echo "  DEMO_SIZE=$(DEMO_SIZE) (default | small) TEST_DIR=$(TEST_DIR) AUDIO=$(AUDIO) OUT=$(OUT) BENCH_SIZE=$(BENCH_SIZE)"
	@echo "  PSEUDO_LABELS=energy | CHECKPOINT labels recordings without RTTM in make features (flagged pseudo)"
	@echo "  SCHEDULER=local | tcp://HOST:PORT runs make features on a Dask cluster"
	@echo "  SPLIT_BY=$(SPLIT_BY) (recordings | voices: validation holds voices train never has; the demo's default)"
	@echo "  RESUME=1 continues RUN, OVERWRITE=1 replaces it (make demo does); any other NAME=VALUE is a training"
	@echo "  override, e.g. EPOCHS=3 BATCH=8 LR=5e-4"
	@echo "  INIT_FROM=RUN/best.pt fine-tunes from another run's weights; TB_DIR=$(TB_DIR) for make tensorboard"

# resemblyzer and silero-vad are installed for their weights only (agencerdas.pretrained reads resemblyzer's
# pretrained.pt and silero's TorchScript file, and never imports either package), without their dependencies:
# the others are the project's own; resemblyzer's webrtcvad, needed only by its import, is a C build from source
# (and `typing` an old backport), and silero's torchaudio resolves to a build for another torch (a CUDA one that
# fails to load beside the pinned CPU torch). pip cannot skip a dependency's dependencies from pyproject.toml,
# hence this line; silero-vad < 7: its file's parameters are read by name.
$(BIN)/agencerdas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]" "$(TORCH)"
	$(BIN)/pip install --quiet --no-deps "resemblyzer==0.1.4" "silero-vad>=6.2,<7"
	@touch $@

install: $(BIN)/agencerdas ## Create .venv with TORCH (default torch==2.13.0) and the project (editable, test extras)

$(DATA)/train/corpus.json: | $(BIN)/agencerdas
	$(BIN)/agencerdas simulate $(DATA)/train --pool train --seed 1 $(SIM_TRAIN) $(SIM_COMMON)

$(DATA)/test/corpus.json: | $(BIN)/agencerdas
	$(BIN)/agencerdas simulate $(DATA)/test --pool test --seed 2 $(SIM_TEST) $(SIM_COMMON)

# More speakers per recording (5-7) than the model has slots, from the same unseen voices: clustering's test set.
$(DATA)/test-many/corpus.json: | $(BIN)/agencerdas
	$(BIN)/agencerdas simulate $(DATA)/test-many --pool test --seed 7 --speakers 5:0.4,6:0.3,7:0.3 $(SIM_MANY) $(SIM_COMMON)

corpus: $(DATA)/train/corpus.json $(DATA)/test/corpus.json $(DATA)/test-many/corpus.json ## Generate the demo corpus (train + held-out test speakers, and a 5-7-speaker test set)

features: install ## Build or update the feature store STORE from AUDIO_DIR (+ RTTM_DIR), JOBS processes or SCHEDULER
	$(BIN)/agencerdas features $(AUDIO_DIR) --rttm-dir $(RTTM_DIR) --store $(STORE) --view $(VIEW) --jobs $(JOBS) \
		--split-by $(SPLIT_BY) \
		$(if $(SCHEDULER),--scheduler $(SCHEDULER)) \
		$(if $(PSEUDO_LABELS),$(if $(filter energy,$(PSEUDO_LABELS)),--pseudo-labels,--pseudo-model $(PSEUDO_LABELS))) \
		$(if $(findstring ://,$(STORE)),,--summary-json $(STORE)/last-features-run.json)

train: install ## Train PRESET on the store's VIEW into RUN (GPUS=N uses torchrun; NAME=VALUE overrides)
	$(TRAIN_CMD) train --store $(STORE) --view $(VIEW) --preset $(PRESET) --out $(RUN) $(if $(RESUME),--resume) \
		$(if $(OVERWRITE),--overwrite) $(OVERRIDES)

evaluate: install ## DER of MODEL on the held-out TEST_DIR (report, RTTMs and plots in RUN/eval; EVAL_FLAGS=--tune tunes on validation first)
	$(BIN)/agencerdas evaluate --model $(MODEL) --store $(STORE) --audio-dir $(TEST_DIR)/audio \
		--rttm-dir $(TEST_DIR)/rttm --uem-dir $(TEST_DIR)/uem --jobs $(JOBS) --attention $(EVAL_FLAGS)

diarize: install ## Write RTTMs for AUDIO files into OUT with MODEL
	$(BIN)/agencerdas diarize $(AUDIO) --model $(MODEL) --out $(OUT) --store $(STORE)

plot: install ## Loss curves of RUN into RUN/plots/loss.png
	$(BIN)/agencerdas plot $(RUN)

tensorboard: install ## TensorBoard of every run under TB_DIR (default runs/): loss, LR, DER, timelines
	$(BIN)/tensorboard --logdir $(TB_DIR)

# The demo corpus names its voices across recordings (train-spk025 is one person), so they are the embedding loss's
# identities (SPEAKER_IDS=global); a corpus that names speakers per recording (A, B) keeps the default.
demo: install corpus ## Everything on the built-in corpus: simulate → features → train → evaluate (2-4 and 5-7 speakers) → plots
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory features && t1=$$(date +%s) && \
	$(MAKE) --no-print-directory train OVERWRITE=1 SPEAKER_IDS=global && t2=$$(date +%s) && \
	$(MAKE) --no-print-directory evaluate plot EVAL_FLAGS=--tune && \
	$(BIN)/agencerdas evaluate --model $(MODEL) --store $(STORE) --view test-many --audio-dir $(DATA)/test-many/audio \
		--rttm-dir $(DATA)/test-many/rttm --uem-dir $(DATA)/test-many/uem --jobs $(JOBS) --out $(RUN)/eval-many && \
	$(BIN)/agencerdas evaluate --pretrained --audio-dir $(DATA)/test/audio --rttm-dir $(DATA)/test/rttm \
		--uem-dir $(DATA)/test/uem --out $(RUN)/eval-pretrained && \
	$(BIN)/agencerdas evaluate --pretrained --audio-dir $(DATA)/test-many/audio --rttm-dir $(DATA)/test-many/rttm \
		--uem-dir $(DATA)/test-many/uem --out $(RUN)/eval-many-pretrained && \
		t3=$$(date +%s) && \
	$(BIN)/agencerdas demo-summary --data $(DATA) --store $(STORE) --run $(RUN) \
		--stage-seconds $$((t1-start)),$$((t2-t1)),$$((t3-t2))

test: install ## Run the test suite (CPU only, no network, a few minutes)
	$(BIN)/python -m pytest -q tests

# The bench extra (Lhotse, the competitor of the feature-build rows), once per pyproject change; `make test` never needs it.
$(VENV)/.bench-extra: pyproject.toml | $(BIN)/agencerdas
	$(BIN)/pip install --quiet -e ".[test,bench]" "$(TORCH)"
	@touch $@

bench: install $(VENV)/.bench-extra ## Speed and memory ratios against in-process baselines (BENCH_SIZE=tiny|small|full)
	$(BIN)/agencerdas bench --size $(BENCH_SIZE) --jobs $(JOBS)

bench-gpu: install $(VENV)/.bench-extra ## The bench plus fp32/bf16/fp16 step throughput and peak GPU memory per preset (needs CUDA)
	$(BIN)/agencerdas bench --size $(BENCH_SIZE) --jobs $(JOBS) --gpu

gpu-check: install ## The trainer's GPU figures in minutes on a synthetic store (needs CUDA; bench/gpu_check.sh without a registry)
	$(BIN)/python -m agencerdas.bench.gpu_check --out bench/results/gpu-check.json
