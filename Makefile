# Two commands for a new user: `make demo` and `make test`. Both build .venv first (make setup).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= runs/demo
DATA   ?= ../shared/data/cxr-dev

.PHONY: setup demo test fuzz mutation study selection model reproduce cv train-real clean help

help:
	@echo "make demo   - set up .venv, make synthetic data, train a tiny QAT model, convert it to a bundle, benchmark every format, print metrics"
	@echo "make test   - set up .venv and run the test suite"
	@echo "make fuzz   - fuzz the image decoder with a long budget (FUZZ_EXAMPLES=5000)"
	@echo "make mutation - mutmut over the decision/calibration/metrics/bundle code; lists surviving mutants"
	@echo "make setup  - create .venv with every extra (no-op when up to date)"
	@echo "make model  - the default model from scratch: train with $(RECIPE) on DATA, convert to a bundle, benchmark it (the recipe's [ensemble]: two trainings served as one bundle: 31 min on 2 cores with MODEL_PARALLEL=1, measured on an Intel Xeon, 2026-12-05); MODEL_MEMBERS= for one training, MODEL_MEMBERS=\"1 2\" for three, MODEL_PARALLEL=1 trains them side by side, MODEL_PUBLISH=benchmarks writes benchmarks/RESULTS.md; a recipe with [distill] then trains a student taught by them and serves it alone"
	@echo "make reproduce - after make model: are its test figures within the run-to-run spread of the reported default? (seconds)"
	@echo "make cv     - patient-grouped $(FOLDS)-fold cross-validation of $(RECIPE) on DATA, out-of-fold report (hours; resumes); each fold as the recipe's [ensemble] (the default: two trainings), then its [distill] student if it has one; CV_MEMBERS= one training per fold"
	@echo "make study  - the model-selection study on real images (DATA=../shared/data/cxr-dev; hours; resumes)"
	@echo "make selection - benchmarks/MODEL_SELECTION.md from the committed lever reports (recipes/levers.toml; seconds)"

# Re-run the install only when the dependency declarations change.
$(STAMP): setup.cfg pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[edge,openvino,onnx,train,dev]"
	$(PY) -m pip check
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m train.demo --out $(OUT)
	# exit status 3 = bundle written but some format failed its parity check (shown in the table): go on
	$(PY) -m convert $(OUT)/run --formats all --out $(OUT)/bundle --force || test $$? -eq 3
	$(PY) -m benchmarks --bundle $(OUT)/bundle --run $(OUT)/run --out $(OUT)/benchmark --iterations 50
	@echo "Classify with the bundle:  $(PY) -m edge_runtime classify $(OUT)/data/tuberculosis --bundle $(OUT)/bundle"

# Two workers for CI's two cores (TEST_WORKERS=0 for one process), a test file per worker at a time; the tiny
# trained model is built once for both (tests/conftest.py).
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The decode fuzz test with a long budget (the suite runs it with 60 examples). FUZZ_EXAMPLES=N to change.
FUZZ_EXAMPLES ?= 5000
fuzz: setup
	CXR_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/test_fuzz_decode.py

# Mutation testing of the decision, calibration, metrics and bundle-verification code ([mutmut] in setup.cfg;
# minutes; not part of `make test`). Lists the surviving mutants; `mutmut show NAME` prints one.
mutation: setup
	$(PY) -m pip install --quiet -c requirements/constraints.txt mutmut
	$(VENV)/bin/mutmut run --max-children 2 || true
	$(VENV)/bin/mutmut results

# The model-selection study on real images (train every candidate and the shortcut controls, convert, measure,
# write STUDY_OUT/MODEL_SELECTION.md; --publish copies it to benchmarks/STUDY.md, never over make selection's
# benchmarks/MODEL_SELECTION.md). Hours on 2 cores; rerun to resume. DATA=path to use other images.
# STUDY_ARGS: more options, e.g. issue 16's ranking over seeds with the default recipe's training competing (one
# training each, converted without the recipe's [convert] and [ensemble] tables: the study ranks trainings):
#   make study STUDY_ARGS="--seeds 0,1,2 --candidate-recipes recipes/default.toml"
STUDY_OUT ?= runs/study
STUDY_ARGS ?=
study: setup
	$(PY) -m benchmarks.study --data $(DATA) --out $(STUDY_OUT) --publish benchmarks $(STUDY_ARGS)

# Issue 16's model-selection report: the default's cross-validation and every lever measured against it, read from
# the committed reports that recipes/levers.toml lists (seconds; run it from a clean commit).
selection: setup
	$(PY) -m benchmarks.selection --levers recipes/levers.toml --out benchmarks/MODEL_SELECTION.md

# The default model, from its versioned recipe: train on the real images, convert to a bundle (model card
# inside), benchmark every format of it on the run's test split (speed, quality; then issue 16's figures:
# NIH normal-vs-pneumonia AUC, TB rule, referral rate, intervals, simulated site B). The default pair: 31 min on a
# 2-core Intel Xeon with MODEL_PARALLEL=1 (2026-12-05, part of the test suite beside it; README); the former MobileNetV2
# pair 46 min on a quiet Zen 3. The training
# refuses an existing MODEL_OUT: remove it, choose another, or pass TRAIN_FLAGS=--resume to continue it.
RECIPE          ?= recipes/default.toml
MODEL_OUT       ?= runs/default
TRAIN_FLAGS     ?=
# Every backend gets its float file beside its INT8 one: a kit for a backend needs an artifact of it that passed
# its parity check, and INT8 files fail it (the served pair's OpenVINO INT8, the Lite0 pair's ONNX and OpenVINO).
CONVERT_FORMATS ?= tflite_int8,tflite_int8_ptq,tflite_fp32,openvino_int8,openvino_fp32,onnx_int8,onnx_fp32
# MODEL_MEMBERS: the --init-seed of each further training served with the first as one bundle (an ensemble:
# MODEL_OUT-init1, ... on the same split, converted together with python -m convert --member; each inference then
# costs one run per training). Default: the recipe's [ensemble] init-seeds (none: one training); MODEL_MEMBERS="1 2"
# for three trainings, MODEL_MEMBERS= for one whatever the recipe says. With another split seed (TRAIN_FLAGS="--seed 1")
# pass MODEL_MEMBERS=2: a member's init seed must differ from the first training's own.
# MODEL_PARALLEL=1: train the members at the same time as the first training (each logs to MODEL_OUT-initN.log;
# a member that fails stops every training at once);
# the fold pairs of docs/served trained this way in 41-45 min on 2 cores (AMD EPYC Zen 3, 2026-12-03).
MODEL_PARALLEL  ?=
# MODEL_PUBLISH=benchmarks: the benchmark also becomes benchmarks/RESULTS.md (the default's published benchmark; run
# it from a clean commit and commit the result).
MODEL_PUBLISH   ?=
MODEL_MEMBERS   ?= recipe
model: setup
	@members=$$($(PY) -m train.recipe members $(RECIPE) --given "$(MODEL_MEMBERS)" --train-flags="$(TRAIN_FLAGS)") \
	  || exit 2; \
	: "the recipe's [distill]: a student taught by those trainings is the served model (nothing: they are)"; \
	student=$$($(PY) -m train.recipe student $(RECIPE) --out $(MODEL_OUT) --members "$$members" \
	  --train-flags="$(TRAIN_FLAGS)") || exit 2; \
	set -e; \
	flags=""; pids=""; first=""; \
	: "\$$! too: a member's USR1 may arrive between the first training's start and first=\$$!"; \
	trap 'for p in $$pids $$first $$!; do kill $$p 2>/dev/null || true; done; wait' EXIT; \
	trap 'for p in $$pids $$first $$!; do kill $$p 2>/dev/null || true; done; exit 143' TERM HUP INT; \
	: "a member that fails signals this shell (USR1) at once: the first training is stopped, not left to finish"; \
	trap 'echo "an ensemble member'"'"'s training failed: see $(MODEL_OUT)-init*.log" >&2; exit 1' USR1; \
	for s in $$members; do \
	  flags="$$flags --member $(MODEL_OUT)-init$$s"; \
	  if [ -n "$(MODEL_PARALLEL)" ]; then \
	    mkdir -p "$(dir $(MODEL_OUT))"; \
	    echo "== ensemble member: $(MODEL_OUT)-init$$s (--init-seed $$s), in the background, log $(MODEL_OUT)-init$$s.log"; \
	    ( c=""; trap '[ -z "$$c" ] || kill $$c 2>/dev/null; exit 143' TERM; \
	      $(PY) -m train --recipe $(RECIPE) --data $(DATA) --out $(MODEL_OUT)-init$$s $(TRAIN_FLAGS) --init-seed $$s \
	        >> $(MODEL_OUT)-init$$s.log 2>&1 & c=$$!; \
	      wait $$c || { kill -USR1 $$$$; exit 1; } ) & pids="$$pids $$!"; \
	  fi; \
	done; \
	echo "$(PY) -m train --recipe $(RECIPE) --data $(DATA) --out $(MODEL_OUT) $(TRAIN_FLAGS)"; \
	if [ -n "$$pids" ]; then \
	  $(PY) -m train --recipe $(RECIPE) --data $(DATA) --out $(MODEL_OUT) $(TRAIN_FLAGS) & first=$$!; \
	  : "polled, not one long wait: a member's USR1 that lands just as sh's wait starts can be held until the first"; \
	  : "training ends (seen under load); between short sleeps the trap runs within a second (Linux: /proc)"; \
	  while [ -r /proc/$$first/stat ] && ! grep -q ') Z ' /proc/$$first/stat 2>/dev/null; do sleep 1; done; \
	  wait $$first; first=""; \
	else \
	  $(PY) -m train --recipe $(RECIPE) --data $(DATA) --out $(MODEL_OUT) $(TRAIN_FLAGS); \
	fi; \
	for s in $$members; do \
	  if [ -z "$(MODEL_PARALLEL)" ]; then \
	    echo "== ensemble member: $(MODEL_OUT)-init$$s (--init-seed $$s)"; \
	    $(PY) -m train --recipe $(RECIPE) --data $(DATA) --out $(MODEL_OUT)-init$$s $(TRAIN_FLAGS) --init-seed $$s; \
	  fi; \
	done; \
	for p in $$pids; do \
	  wait $$p || { echo "an ensemble member's training failed: see $(MODEL_OUT)-init*.log" >&2; exit 1; }; \
	done; pids=""; \
	served=$(MODEL_OUT); \
	if [ -n "$$student" ]; then \
	  echo "== the served model: the student $(MODEL_OUT)-student, taught by the trainings above (the recipe's [distill])"; \
	  echo "$(PY) -m train --recipe $(RECIPE) --data $(DATA) --out $(MODEL_OUT)-student $(TRAIN_FLAGS) $$student"; \
	  eval "$(PY) -m train --recipe $(RECIPE) --data $(DATA) --out $(MODEL_OUT)-student $(TRAIN_FLAGS) $$student"; \
	  served=$(MODEL_OUT)-student; flags=""; \
	fi; \
	formats="$(CONVERT_FORMATS)"; \
	: "an ensemble's Keras float model (the benchmark's baseline) lives in its bundle; a kit leaves it out"; \
	case ",$$formats," in *,keras_fp32,*) ;; *) [ -z "$$flags" ] || formats="$$formats,keras_fp32";; esac; \
	echo "$(PY) -m convert $$served$$flags --recipe $(RECIPE) --formats $$formats --out $(MODEL_OUT)-bundle --force"; \
	: "exit status 3 = bundle written but some format failed its parity check (shown in the table): go on"; \
	$(PY) -m convert $$served $$flags --recipe $(RECIPE) --formats $$formats --out $(MODEL_OUT)-bundle \
	  --force || test $$? -eq 3; \
	: "issue 16's figures first: publishing the benchmark (MODEL_PUBLISH) changes the checkout they would record"; \
	echo "$(PY) -m benchmarks.default_figures $(MODEL_OUT)-bundle --out $(MODEL_OUT)-benchmark/default_figures.json"; \
	$(PY) -m benchmarks.default_figures $(MODEL_OUT)-bundle --out $(MODEL_OUT)-benchmark/default_figures.json; \
	echo "$(PY) -m benchmarks --bundle $(MODEL_OUT)-bundle --run $$served --out $(MODEL_OUT)-benchmark$(if $(MODEL_PUBLISH), --publish $(MODEL_PUBLISH))"; \
	$(PY) -m benchmarks --bundle $(MODEL_OUT)-bundle --run $$served --out $(MODEL_OUT)-benchmark \
	  $(if $(MODEL_PUBLISH),--publish $(MODEL_PUBLISH))
	@echo "Bundle: $(MODEL_OUT)-bundle   benchmark report: $(MODEL_OUT)-benchmark/report.md"

# Does the rebuild (make model, seed 0) reproduce the default's reported test figures within the run-to-run spread
# (the default trained twice on the same folds)? The reference is the published seed-0 build of the default (its
# default_figures.json, committed in docs/default-lite0sa/); the answer goes to MODEL_OUT-benchmark/reproduce.md. The
# spread is the recipe's own: its two five-fold draws on the same folds (docs/lpft/SITEAUG.md: init seeds 0 and 1
# against 2 and 3), and a rate is judged at one film at least. The former default (recipes/mnv2-pair.toml):
# REPRO_REF=docs/default/default_figures.json REPRO_SPREAD="docs/served/crossval.json docs/members/rerun-crossval.json";
# its one-training spread: REPRO_SPREAD="docs/cv5/crossval.json docs/cv5r/crossval.json" with
# REPRO_REF=docs/ema/paired.json REPRO_ARM=runs/default-s0-op-bundle (and MODEL_MEMBERS=).
REPRO_REF    ?= docs/default-lite0sa/default_figures.json
REPRO_ARM    ?=
REPRO_SPREAD ?= docs/lite0sa/crossval.json docs/lite0sa2/crossval.json
reproduce: setup
	$(PY) -m benchmarks.reproduce $(MODEL_OUT)-benchmark/default_figures.json --reference $(REPRO_REF) \
		$(if $(REPRO_ARM),--arm $(REPRO_ARM)) --spread $(REPRO_SPREAD) --out $(MODEL_OUT)-benchmark/reproduce.md \
		--json $(MODEL_OUT)-benchmark/reproduce.json

# Patient-grouped k-fold cross-validation of a recipe, the honest way to rank recipes: one build of the recipe
# per fold (the default's: two trainings, its [ensemble]; every film tested exactly once over the FOLDS builds),
# each converted to CV_FORMATS (LiteRT QAT INT8, post-training INT8 and FP32: convert chooses which INT8 file the
# device serves, as for the default; the report scores
# tflite_int8 unless CV_ARGS="--format served", and says where a fold serves another file), then the
# out-of-fold report against issue 16's goals (benchmarks.crossval: CV_OUT/report.md and crossval.json). 20-60 min
# per training of a fold on 2 cores, by CPU and load (the default: two per fold, side by side); rerun to resume (finished folds are kept,
# an interrupted one continues). TRAIN_FLAGS
# adds options to every fold's training (e.g. TRAIN_FLAGS="--ema 0.99" for a lever's CV): give each recipe its
# own CV_OUT (the report refuses folds of two recipes). CV_OUT/folds.json keeps every fold's scored test films
# and its validation outputs: it stands in for the bundles later (a report, --baseline of another recipe's report,
# or an operating-point what-if such as CV_ARGS="--tb-sensitivity 0.95"). Across sessions or
# machines that do not keep runs/: CV_SAVED=docs/NAME/folds.json (committed) keeps the folds it holds and gains the
# ones trained now, CV_TRAIN="0 1" trains only those folds this time (the report says which are still missing).
# CV_ARGS: more options for the report, e.g. CV_ARGS="--baseline docs/served/folds.json" (a lever against
# the default pair, on the folds both hold). CV_MEMBERS: as MODEL_MEMBERS (default: the recipe's [ensemble] init-seeds);
# CV_MEMBERS="1" (the default's): each fold served as an ensemble: its training and one more of the same fold with
# --init-seed 1 (CV_OUT/fold0-init1, ...), converted together (python -m convert --member); a fold's bundle is
# converted again whenever its members differ from CV_MEMBERS.
FOLDS    ?= 5
CV_SEED  ?= 0
CV_OUT   ?= runs/cv
CV_SAVED ?=
CV_TRAIN ?= $(shell seq 0 $$(($(FOLDS) - 1)))
CV_ARGS  ?=
CV_MEMBERS ?= recipe
CV_FORMATS ?= tflite_int8,tflite_int8_ptq,tflite_fp32
cv: setup
	@seeds=$$($(PY) -m train.recipe members $(RECIPE) --given "$(CV_MEMBERS)" --seed $(CV_SEED) \
	  --train-flags="$(TRAIN_FLAGS)") || exit 2; \
	$(PY) -m train.recipe student $(RECIPE) --out "$(CV_OUT)/fold" --members "$$seeds" --seed $(CV_SEED) \
	  --train-flags="$(TRAIN_FLAGS)" > /dev/null || exit 2; \
	saved=""; \
	if [ -n "$(CV_SAVED)" ] && [ -f "$(CV_SAVED)" ]; then \
	  saved=$$($(PY) -c 'import json, sys; print(" ".join(str(f["fold"]) for f in json.load(open(sys.argv[1]))["folds"]))' \
	    "$(CV_SAVED)") || exit 1; \
	  echo "== folds saved in $(CV_SAVED): $$saved (kept, not trained again)"; \
	fi; \
	for i in $(CV_TRAIN); do \
	  case " $$saved " in *" $$i "*) continue;; esac; \
	  run=$(CV_OUT)/fold$$i; \
	  if [ ! -f "$$run/metadata.json" ]; then \
	    resume=""; [ -d "$$run" ] && resume=--resume; \
	    echo "== fold $$i of $(FOLDS): training $$run $$resume"; \
	    $(PY) -m train --recipe $(RECIPE) --data $(DATA) --out "$$run" --seed $(CV_SEED) --folds $(FOLDS) --fold $$i \
	      $$resume $(TRAIN_FLAGS) || exit 1; \
	  fi; \
	  members=""; paths=""; stale=""; \
	  for s in $$seeds; do \
	    m="$$run-init$$s"; members="$$members --member $$m"; paths="$$paths $$m"; \
	    if [ ! -f "$$m/metadata.json" ]; then \
	      resume=""; [ -d "$$m" ] && resume=--resume; \
	      echo "== fold $$i of $(FOLDS): ensemble member $$m (--init-seed $$s) $$resume"; \
	      $(PY) -m train --recipe $(RECIPE) --data $(DATA) --out "$$m" --seed $(CV_SEED) --folds $(FOLDS) --fold $$i \
	        $$resume $(TRAIN_FLAGS) --init-seed $$s || exit 1; \
	    fi; \
	    [ "$$m/metadata.json" -nt "$$run-bundle/bundle.json" ] && stale=1; \
	  done; \
	  served="$$run"; \
	  student=$$($(PY) -m train.recipe student $(RECIPE) --out "$$run" --members "$$seeds" --seed $(CV_SEED) \
	    --train-flags="$(TRAIN_FLAGS)") || exit 2; \
	  if [ -n "$$student" ]; then \
	    served="$$run-student"; members=""; paths=""; \
	    if [ ! -f "$$served/metadata.json" ]; then \
	      resume=""; [ -d "$$served" ] && resume=--resume; \
	      echo "== fold $$i of $(FOLDS): the student $$served, taught by the fold's trainings (the recipe's [distill]) $$resume"; \
	      eval "$(PY) -m train --recipe $(RECIPE) --data $(DATA) --out \"$$served\" --seed $(CV_SEED) --folds $(FOLDS) \
	        --fold $$i $$resume $(TRAIN_FLAGS) $$student" || exit 1; \
	    fi; \
	  fi; \
	  if [ -f "$$run-bundle/bundle.json" ] && ! $(PY) -c 'import json, sys; d = json.load(open(sys.argv[1])); \
	      m = [x["run_dir"] for x in d.get("members", [])[1:]]; sys.exit(d.get("run_dir") != sys.argv[2] or m != sys.argv[3:])' \
	      "$$run-bundle/bundle.json" "$$served" $$paths; then stale=1; fi; \
	  if [ ! -f "$$run-bundle/bundle.json" ] || [ "$$served/metadata.json" -nt "$$run-bundle/bundle.json" ] || [ -n "$$stale" ]; then \
	    echo "== fold $$i of $(FOLDS): converting $$served$${members:+ (an ensemble:$$members)}"; \
	    $(PY) -m convert "$$served" $$members --recipe $(RECIPE) --formats $(CV_FORMATS) --out "$$run-bundle" --force \
	      || [ $$? -eq 3 ] || exit 1; \
	  fi; \
	done; \
	inputs=""; [ -n "$$saved" ] && inputs="$(CV_SAVED)"; \
	for b in $(CV_OUT)/fold*-bundle; do \
	  [ -f "$$b/bundle.json" ] || continue; i=$${b##*/fold}; i=$${i%-bundle}; \
	  case " $$saved " in *" $$i "*) ;; *) inputs="$$inputs $$b";; esac; \
	done; \
	$(PY) -m benchmarks.crossval $$inputs --out $(CV_OUT)/crossval.json --md $(CV_OUT)/report.md \
	  --save-folds $(or $(CV_SAVED),$(CV_OUT)/folds.json) $(CV_ARGS)
	@echo "Out-of-fold report: $(CV_OUT)/report.md; every fold scored so far: $(or $(CV_SAVED),$(CV_OUT)/folds.json)"

# Training only, with the default recipe, on the real development images: one training (the recipe's [ensemble] is
# make model's; 20-60 min on 2 cores, by CPU and load).
train-real: setup
	$(PY) -m train --recipe $(RECIPE) --data $(DATA) --out runs/cxr-dev-default $(TRAIN_FLAGS)

# the environment and test caches; never the trainings (runs/ holds hours of work: remove it by hand)
clean:
	rm -rf $(VENV) .pytest_cache
