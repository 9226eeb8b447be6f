# The two commands in the README are `make demo` and `make test`; both set up
# a fresh machine themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest processes for `make test` (tests/ use ephemeral ports and their own
# temporary directories, so any number can run side by side).
TEST_PROCESSES ?= 2

.PHONY: demo test bench lint clean system-packages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(STAMP)

system-packages:
	./scripts/install-system-packages.sh

demo: $(STAMP)
	$(BIN)/prefork-proxy demo

test: system-packages $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile

bench: system-packages $(STAMP)
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
