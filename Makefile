# rankline: `make demo` runs the whole pipeline; `make test` runs the tests;
# `make up` / `make down` start and stop Airflow, the MLflow UI and the serving API.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint serve up down clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps "recbole==1.2.1"
	# obp (Open Bandit Pipeline), the tests' second opinion on the IPS estimators: its last
	# release declares Python < 3.11 and pins old releases, yet its estimators run here as they are
	$(BIN)/pip install -q --no-deps --ignore-requires-python "obp==0.5.7"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rankline demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q

serve: $(STAMP)
	$(BIN)/rankline serve

up: $(STAMP)
	$(BIN)/rankline up

down: $(STAMP)
	$(BIN)/rankline down

clean:  # stops the services first: their PID files live in var/
	-test ! -x $(BIN)/rankline || $(BIN)/rankline down
	rm -rf var
