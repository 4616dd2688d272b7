# Two commands for a fresh machine with python3 and make: `make run` and `make test`.
# `make run` installs what the server needs to run; `make test` adds the test tools (the
# `test` extra: pytest, playwright, mypy, ruff...). Both install echostat editable into .venv.
VENV := .venv
PYTHON := $(VENV)/bin/python
RUNTIME := $(VENV)/.runtime
INSTALLED := $(VENV)/.installed
# setuptools says "Editable installation." on every editable install, for information only
# (a folder named like the package, echostat/, shadows nothing here: it is that package).
PIP := PYTHONWARNINGS="ignore:Editable installation" $(PYTHON) -m pip install --quiet

.PHONY: run test bench clean

run: $(RUNTIME)
	$(VENV)/bin/echostat

test: $(INSTALLED)
	$(PYTHON) -m pytest

$(RUNTIME): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) --editable .
	touch $@

$(INSTALLED): $(RUNTIME)
	$(PIP) --editable '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
