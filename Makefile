# Developer entry points. `make test` sets everything up from scratch and runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint bench chat

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned: the CPU build (an unpinned torch pulls a multi-GB CUDA build)
setup: $(BIN)/python
	command -v bwrap >/dev/null || (apt-get update -qq && apt-get install -y -qq bubblewrap) \
		|| echo "bubblewrap not installed: the code sandbox uses its weaker fallback"
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[vision,train,gemma,dev]"

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

chat: $(BIN)/python
	$(BIN)/pip install --quiet -e .
	$(BIN)/thau-chat --backend embedded --yes --message "$(or $(MESSAGE),Run this Python code and tell me what it prints: print(2**100))"
