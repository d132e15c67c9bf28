# Two commands do everything on a fresh Debian machine with Python 3.11:
#   make run    installs, migrates and starts the whole stack on 127.0.0.1:8000
#   make test   installs and runs the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench deps system-deps services clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[test]'
	touch $(STAMP)

deps: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

services: system-deps
	bash scripts/services.sh

run: system-deps deps
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable
	$(BIN)/python manage.py firstrun --url http://127.0.0.1:$${WEB_PORT:-8000}/
	$(BIN)/honcho -f Procfile start

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: services deps lint
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/pytest

bench: services deps
	bash scripts/bench-deps.sh
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var
