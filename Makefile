# Two commands for a fresh machine with python3 and make: `make run` and `make test`.
VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test bench clean

run: $(INSTALLED)
	$(VENV)/bin/echostat --config config.yaml

test: $(INSTALLED)
	$(PYTHON) -m pytest

$(INSTALLED): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet --editable '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
