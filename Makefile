# ttcjax: `make study` runs the main job, `make test` runs the tests.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= test,hf,data
WORKDIR ?= workdir/study
PRESET ?= smoke

.PHONY: venv test test-all study bench clean

$(BIN)/.installed-$(EXTRAS): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

venv: $(BIN)/.installed-$(EXTRAS)

test: venv
	$(BIN)/python -m pytest -q

test-all: venv
	$(BIN)/python -m pytest -q -m ""

study: venv
	$(BIN)/python -m ttcjax.main.study \
	    --gin_file=gin_configs/experiments/$(PRESET).gin --workdir=$(WORKDIR)

bench: venv
	$(BIN)/python bench/decode.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
