# promptmill: `make demo` runs the pipeline on the bundled examples, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install demo test lint bench browse clean labelstudio-check

$(VENV)/.installed: requirements/base.txt requirements/ml.txt requirements/dev.txt pyproject.toml setup.py \
		lib/promptmill/dedup/_simhash.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh

test: install
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check lib steps tests benchmarks

bench: install
	$(PY) benchmarks/run_all.py

browse: install
	$(VENV)/bin/promptmill browse

# The Label Studio round trip against the real server, in its own venv (not part of `make test`).
LS_VENV ?= .venv-labelstudio
LABEL_STUDIO_VERSION ?= 1.23.0

$(LS_VENV)/bin/label-studio:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q 'label-studio==$(LABEL_STUDIO_VERSION)'

labelstudio-check: install $(LS_VENV)/bin/label-studio
	$(PY) tests/labelstudio_check.py --label-studio $(LS_VENV)/bin/label-studio

clean:
	rm -rf $(VENV) $(LS_VENV) out
