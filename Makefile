# Two commands for a new user: `make demo` and `make test`. Both build .venv first (make setup).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= runs/demo
DATA   ?= ../shared/data/cxr-dev

.PHONY: setup demo test test-fast fuzz mutation study clean help

help:
	@echo "make demo   - set up .venv, make synthetic data, train a tiny QAT model, convert it to a bundle, benchmark every format, print metrics"
	@echo "make test   - set up .venv and run the test suite"
	@echo "make fuzz   - fuzz the image decoder with a long budget (FUZZ_EXAMPLES=5000)"
	@echo "make mutation - mutmut over the decision/calibration/metrics/bundle code; lists surviving mutants"
	@echo "make setup  - create .venv with every extra (no-op when up to date)"
	@echo "make study  - the model-selection study on real images (DATA=../shared/data/cxr-dev; hours; resumes)"

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

test: setup
	$(PY) -m pytest -q

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
# write benchmarks/MODEL_SELECTION.md). Hours on 2 cores; rerun to resume. DATA=path to use other images.
STUDY_OUT ?= runs/study
study: setup
	$(PY) -m benchmarks.study --data $(DATA) --out $(STUDY_OUT) --publish benchmarks

# Full-size run on the real development images (about an hour on 2 cores).
train-real: setup
	$(PY) -m train --data $(DATA) --model mobilenet_v2 --image-size 224 --out runs/cxr-dev-mnv2

clean:
	rm -rf $(VENV) runs .pytest_cache
