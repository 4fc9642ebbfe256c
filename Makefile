# Two set-up commands: `make demo` and `make test`. Each creates .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned (extra `train`) so this machine takes the CPU build on disk.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[train,gui,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rt-decoder demo $(if $(DATA),--data $(DATA),)

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check rt_decoder training tests tools

bench: $(STAMP)
	$(BIN)/rt-decoder bench latency

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
