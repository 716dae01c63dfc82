# Every target sets itself up: a fresh machine needs only python3, pip and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from the pinned CPU build; the constraints file keeps it pinned afterwards
	$(PY) -m pip install -q torch==2.13.0
	PIP_CONSTRAINT=constraints.txt $(PY) -m pip install -q -e '.[train,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/demo.sh

test: venv
	$(PY) -m pytest -q -n 2 -p no:cacheprovider

lint: venv
	$(VENV)/bin/ruff check sftdata sfttrain tests bench

bench: venv
	PIP_CONSTRAINT=constraints.txt $(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
