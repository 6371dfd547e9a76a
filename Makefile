# BrainEdge: `make train optimize bench` is the main job; `make test` runs the tests.
# Every target creates the virtual environment on first use.

PYTHON    ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
EXTRAS    ?= edge,train,dev
# The embedded default dataset (procedural phantoms) unless DATA points at a real one, e.g.
#   make train DATA=../shared/datasets/brain-tumor-mri
DEFAULT_DATA := data/phantoms
DATA      ?= $(DEFAULT_DATA)
MODELS    ?= vgg16 densenet121
RUNS      ?= runs
REPORTS   ?= reports
# demo: small input and few epochs, minutes on a laptop; reference: the 150 px, 20-epoch recipe.
PRESET    ?= $(if $(filter $(DEFAULT_DATA),$(DATA)),demo,reference)
TRAIN_ARGS ?=
OPTIMIZE_ARGS ?=
# e.g. BENCH_ARGS="--threads 1,2 --variant tflite-int8 --variant onnx-int8"
BENCH_ARGS ?=
PYTEST_ARGS ?=

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: help venv data ood-data ood-eval train train-deps audit evaluate compare optimize ship bench results serve browser-deps test test-edge edge-check arm64-check lint clean

help:
	@echo "make venv      create $(VENV) and install brainedge[$(EXTRAS)] (automatic on first use)"
	@echo "make data      generate the embedded default dataset in $(DEFAULT_DATA)"
	@echo "make train     train $(MODELS) on DATA=$(DATA) (preset $(PRESET)) into $(RUNS)/"
	@echo "make audit     duplicate / leakage audit of DATA into $(REPORTS)/audit"
	@echo "make evaluate  evaluate every trained run on DATA's test split"
	@echo "make ood-data  the out-of-distribution evaluation set in $(OOD_SET) (brainedge data ood)"
	@echo "make ood-eval  AUROC of each artifact's out-of-distribution score on that set"
	@echo "make compare   one table comparing the trained runs"
	@echo "make optimize  pruned / quantized TFLite and ONNX variants of each run, checked vs FP32"
	@echo "make bench     latency / throughput / memory / accuracy of every artifact vs Keras FP32,"
	@echo "               one JSON per device run in $(REPORTS)/bench, merged into report.md + plots"
	@echo "make results   every results table of the README, from $(RUNS)/ and $(REPORTS)/bench, into"
	@echo "               $(RESULTS) (summary.md, one page per table family, plots); other seeds"
	@echo "               of a recipe ($(RUNS)/MODEL-seed*, or SEED_RUNS=...) compared on it"
	@echo "make ship      copy each run's SHIP_VARIANT into models/ with its model card"
	@echo "               (SHIP_ARGS=--compress stores the model xz-compressed)"
	@echo "make serve     the page and JSON API on http://127.0.0.1:8000 (SERVE_ARTIFACT, SERVE_ARGS)"
	@echo "make test      run the test suite;  make lint: ruff"
	@echo "make browser-deps  Debian chromium + chromedriver for the browser test (apt-get)"
	@echo "make train-deps    tcmalloc for faster CPU training (apt-get libtcmalloc-minimal4)"
	@echo "make edge-check  install only brainedge[edge] in $(EDGE_VENV) and run the TF-free tests"
	@echo "make arm64-check  the edge install on emulated Pi 4/5 CPUs (QEMU), compared with x86_64"

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

venv: $(BIN)/.installed

$(DEFAULT_DATA)/.complete: | $(BIN)/.installed
	$(BIN)/brainedge data phantoms --out $(DEFAULT_DATA)

data: $(DEFAULT_DATA)/.complete

# Only the embedded default is generated; a real DATA path is used as it is.
DATA_DEP := $(if $(filter $(DEFAULT_DATA),$(DATA)),$(DEFAULT_DATA)/.complete,)
# Training ends with its evaluation: test metrics (full and leakage-free) and the comparison.
train: $(BIN)/.installed $(DATA_DEP)
	@for m in $(MODELS); do \
	  $(BIN)/brainedge train --data "$(DATA)" --model $$m --preset $(PRESET) \
	    --run-dir $(RUNS)/$$m $(TRAIN_ARGS) || exit $$?; \
	done
	$(MAKE) --no-print-directory evaluate compare DATA="$(DATA)"

audit: $(BIN)/.installed $(DATA_DEP)
	$(BIN)/brainedge audit --data "$(DATA)" --out $(REPORTS)/audit

evaluate: audit
	@for m in $(MODELS); do \
	  $(BIN)/brainedge evaluate $(RUNS)/$$m --data "$(DATA)" \
	    --clean-list $(REPORTS)/audit/clean_test.txt || exit $$?; \
	done

compare: $(BIN)/.installed
	$(BIN)/brainedge compare $(addprefix $(RUNS)/,$(MODELS)) --out $(REPORTS)/compare.md

# Every variant of every trained model; exits non-zero at the end if one failed its parity gate.
optimize: $(BIN)/.installed
	@status=0; for m in $(MODELS); do \
	  $(BIN)/brainedge optimize $(RUNS)/$$m $(OPTIMIZE_ARGS) || status=$$?; \
	done; exit $$status

# The recommended edge artifact of each model goes into models/ (package data, committed), with
# its evaluation card; refused for a variant that failed its gate or a phantom-trained run.
SHIP_VARIANT ?= tflite-int8
ship: $(BIN)/.installed audit
	@for m in $(MODELS); do \
	  $(BIN)/brainedge ship $(RUNS)/$$m/optimized/$(SHIP_VARIANT) --name $$m --data "$(DATA)" \
	    --clean-list $(REPORTS)/audit/clean_test.txt $(SHIP_ARGS) || exit $$?; \
	done

# The default sweep: every run and its variants at 1, 2 and 4 threads, batch 1 and 8, accuracy
# on DATA's test split. Copy other devices' JSON files into $(REPORTS)/bench to merge them.
bench: $(BIN)/.installed $(DATA_DEP)
	$(BIN)/brainedge bench run $(addprefix $(RUNS)/,$(MODELS)) --eval-data "$(DATA)" \
	  --out $(REPORTS)/bench $(BENCH_ARGS)
	$(BIN)/brainedge bench report $(REPORTS)/bench --out $(REPORTS)/bench

# Every results table the README shows, regenerated from the run folders, the bench JSON and
# the OOD reports of `make ood-eval`:
# summary.md (what the README embeds), a page per table family, the plots. A missing input is
# a note in the pages; RESULTS_ARGS=--strict makes it an error. SEED_RUNS: other seeds of
# the same recipes (`brainedge train ... --seed 7 --run-dir runs/MODEL-seed7`), compared on
# the evaluation page [default: every $(RUNS)/MODEL-seed* folder].
RESULTS ?= docs/results
RESULTS_ARGS ?=
SEED_RUNS ?= $(patsubst %/,%,$(wildcard $(addsuffix -seed*/,$(addprefix $(RUNS)/,$(MODELS)))))
results: $(BIN)/.installed
	$(BIN)/brainedge results --runs $(addprefix $(RUNS)/,$(MODELS)) \
	  $(if $(strip $(SEED_RUNS)),--seeds $(SEED_RUNS)) --bench $(REPORTS)/bench \
	  --audit $(REPORTS)/audit --ood $(REPORTS)/ood \
	  --out $(RESULTS) --readme README.md $(RESULTS_ARGS)

# The clinic page and JSON API. SERVE_ARGS="--host 0.0.0.0 --port 8080", "--dev" for Flask's
# own server; token, secret key and more through BRAINEDGE_* variables (README, "Serving").
# With no SERVE_ARTIFACT, the shipped DenseNet121 (models/densenet121) answers; never a run
# trained on the phantoms. e.g. SERVE_ARTIFACT=runs/densenet121/optimized/tflite-int8
SERVE_ARTIFACT ?=
SERVE_ARGS ?=
serve: $(BIN)/.installed
	$(BIN)/brainedge serve $(if $(SERVE_ARTIFACT),--artifact $(SERVE_ARTIFACT)) $(SERVE_ARGS)

# The browser of the end-to-end test (tests/test_webapp_browser.py): Debian's chromium and the
# chromedriver built with it, so their versions always match and nothing is downloaded.
BROWSER_PACKAGES ?= chromium chromium-driver
# The out-of-distribution evaluation set (README, "Trust"): Debian's mricron-data brain templates
# for the other-MRI slices (skipped with a note when absent), then `brainedge data ood`.
OOD_SET ?= data/ood
ood-data: $(BIN)/.installed
	@if [ ! -d /usr/share/mricron/templates ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends mricron-data; \
	fi
	$(BIN)/brainedge data ood --data $(DATA) --out $(OOD_SET)

# The out-of-distribution score of every optimized variant (and the run itself) on that set:
# AUROC per group against the test split of the dataset each run was trained on (DATA when
# given), and the share of test slices flagged.
OOD_DATA_ARG := $(if $(filter $(DEFAULT_DATA),$(DATA)),,--data "$(DATA)")
OOD_VARIANTS ?= tflite-int8 tflite-fp32 onnx-int8
ood-eval: $(BIN)/.installed
	@for m in $(MODELS); do \
	  for a in $(RUNS)/$$m $(addprefix $(RUNS)/$$m/optimized/,$(OOD_VARIANTS)); do \
	    [ -d "$$a" ] || continue; \
	    $(BIN)/brainedge evaluate-ood $$a --ood-set $(OOD_SET) $(OOD_DATA_ARG) \
	      --out $(REPORTS)/ood/$$m/$$(basename $$a) || exit $$?; \
	  done; \
	done

# tcmalloc for `brainedge train` and `optimize` (README, "Training": glibc's malloc costs
# TensorFlow a third of its CPU time in page faults on DenseNet121).
train-deps:
	@if [ -n "$$(/sbin/ldconfig -p | grep libtcmalloc_minimal.so.4)" ]; then \
	  echo "train-deps: tcmalloc is installed"; \
	else \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends libtcmalloc-minimal4; \
	fi

browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
	  echo "browser-deps: $$(/usr/bin/chromedriver --version | cut -d' ' -f1-2) and chromium are installed"; \
	else \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES); \
	fi

# The tests train and convert models in-process too: on tcmalloc, where installed (make
# train-deps), they spend less time in page faults (tests/test_prune_qat.py: 138 s on glibc,
# 115 s on tcmalloc, on a 2-core AVX2 EPYC).
TCMALLOC := $(shell /sbin/ldconfig -p 2>/dev/null | grep -o 'libtcmalloc_minimal\.so\.4' | head -1)
test: $(BIN)/.installed
	$(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC) )$(BIN)/pytest $(PYTEST_ARGS)

# What an edge device runs: everything that does not need TensorFlow.
test-edge: $(BIN)/.installed
	$(BIN)/pytest -m "not tf" $(PYTEST_ARGS)

# The same tests in a separate venv holding only brainedge[edge,dev]: proves that the edge
# install (Raspberry Pi, CPU server) needs no TensorFlow.
EDGE_VENV ?= .venv-edge
edge-check:
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/pip install --quiet --upgrade pip
	$(EDGE_VENV)/bin/pip install --quiet -c constraints.txt ".[edge,dev]"
	! $(EDGE_VENV)/bin/python -c "import tensorflow" 2>/dev/null
	$(EDGE_VENV)/bin/python -m pytest -m "not tf" -p no:cacheprovider $(PYTEST_ARGS)

# A Raspberry Pi's CPU (Cortex-A72 = Pi 4, Cortex-A76 = Pi 5) under QEMU user-mode, TensorFlow
# absent: imports, the arm64-marked tests, predict on 52 test slices + 2 DICOM, the server;
# predictions and every preprocessing step compared with x86_64 (deploy/arm64-check/). The
# emulated environment is cached in .arm64/. Equivalence only: emulated times are not latency.
# ARM64_MODELS: artifact folders [default: every models/*/ with a manifest.json].
ARM64_MODELS ?=
ARM64_DATA ?= ../shared/datasets/brain-tumor-mri
ARM64_ARGS ?=
arm64-check: $(BIN)/.installed
	$(BIN)/python deploy/arm64-check/arm64_check.py --data "$(ARM64_DATA)" \
	  $(if $(strip $(ARM64_MODELS)),--models $(ARM64_MODELS)) $(ARM64_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .

clean:
	rm -rf $(RUNS) $(REPORTS) $(DEFAULT_DATA)
