# Two commands a new user needs: `make demo` (set up and run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; set TORCH_SPEC="torch" (or a CUDA wheel) for another build.
TORCH_SPEC ?= torch==2.13.0
DEMO_TARGETS ?= sw,fr,zh
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# llama-cpp-python compiles llama.cpp on the first install (about 15-20 minutes on 2 cores); pip keeps
# the built wheel in its cache (~/.cache/pip), so later installs take seconds.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e '.[all,dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	@echo "== translate examples/demo_en.txt into $(DEMO_TARGETS) with the bundled model"
	$(BIN)/bayling-local translate --to $(DEMO_TARGETS) < examples/demo_en.txt
	@echo "== one chat turn"
	echo "Hello! Can you tell me one fact about Africa?" | $(BIN)/bayling-local chat --max-tokens 96 --seed 7

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/startup.py

clean:
	rm -rf $(VENV) build *.egg-info
