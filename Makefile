# Two commands do all set-up: `make demo` (the bot in a browser, training its first model) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
GOEMOTIONS_DIR ?= $(abspath ../shared/data/goemotions)
export GOEMOTIONS_DIR

.PHONY: install train test lint benchmark demo

# torch first, pinned to the CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
$(BIN)/moodring: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[offline,test]'
	touch $@

install: $(BIN)/moodring

## Fine-tune SqueezeBERT (from the default, offline MiniLM start) on GoEmotions, then report on the test split.
train: install
	$(BIN)/moodring train
	$(BIN)/moodring evaluate --split test

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

## Try the bot in a browser at http://127.0.0.1:8765: a local Discord and the real bot, no account or token needed.
demo: install
	$(BIN)/moodring sandbox

benchmark: install
	$(BIN)/python benchmarks/speed.py
