# Two commands on a fresh machine (Python 3.11+, make, bash):
#   make run    install into .venv and start the service on SQLite (var/alerts.db), file sink var/outbox/
#   make test   install with the test extras and run the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/alerts serve

# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
test: $(VENV)/.installed-test
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(VENV)/.installed-test
	$(BIN)/ruff check alerts tests bench

bench: $(VENV)/.installed-test
	@ls bench/*.py

clean:
	rm -rf $(VENV) var .pytest_cache
