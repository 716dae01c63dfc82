# Every target sets itself up: a fresh machine needs only python3, pip and make.
PYTHON ?= python3
SHELL := bash
VENV := .venv
PY := $(VENV)/bin/python
# The one list of what goes into a venv: every package, transitive ones included, pinned.
# Only `make lock` writes it.
LOCK := requirements.lock
# The CPU build of torch, found locally; left unpinned, pip would pull GBs of CUDA wheels.
TORCH := torch==2.13.0
EXTRAS := train,dev,bench,ray
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | sha1sum | cut -c1-12)

.PHONY: venv demo forgetting test lint bench lock test-latest clean

venv: $(STAMP)

# Exactly the lock, nothing else: --no-deps installs its lines and no more, packages that the
# lock no longer names are removed, and the project itself is installed offline, so a
# requirement (extras included) that the lock lacks fails here instead of floating in.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $$(grep -m1 '^pip==' $(LOCK))
	$(PY) -m pip install -q --no-deps -r $(LOCK)
	$(PY) -m pip freeze --all --exclude-editable | cut -d= -f1 \
	  | grep -vxFf <(grep -v '^#' $(LOCK) | cut -d= -f1) | xargs -r $(PY) -m pip uninstall -q -y
	$(PY) -m pip install -q --no-index --no-build-isolation -e '.[$(EXTRAS)]' \
	  || { echo 'pyproject.toml needs a package that $(LOCK) lacks: run make lock' >&2; exit 1; }
	$(PY) -m pip check
	# the venv is the lock (a local build label such as torch's +cpu aside)
	diff <(grep -v '^#' $(LOCK)) <($(PY) -m pip freeze --all --exclude-editable | sed 's/+[^+]*$$//')
	rm -f $(VENV)/.installed-*
	touch $@

demo: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/demo.sh

# Catastrophic forgetting on SmolLM2: base vs tuned vs tuned with replay, task and broad (MMLU)
# gold sets, one table and one PNG in forgetting_out/ (docs/forgetting.md). Needs ../shared/realdata.
forgetting: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/forgetting.sh

test: venv
	$(PY) -m pytest -q -n 2 -p no:cacheprovider

lint: venv
	$(VENV)/bin/ruff check sftdata sfttrain tests bench

# trl (the bench extra) is in the lock, so the venv already has it.
bench: venv
	$(PY) bench/run_all.py

# $(call fresh-newest,DIR): a new venv in DIR with the newest versions pyproject.toml allows.
define fresh-newest
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -m pip install -q '$(TORCH)' -e '.[$(EXTRAS)]'
endef

# On purpose only: re-resolve everything to the newest allowed versions and pin the result.
# Run `make test-latest` first; commit the new lock with what it changed in the same commit.
lock:
	$(call fresh-newest,.venv-lock)
	.venv-lock/bin/python -m pip freeze --all --exclude-editable | sed 's/+[^+]*$$//' > .venv-lock/freeze
	# CPU only: a CUDA build of torch would drag these in
	! grep -iE '^(nvidia|cuda|triton)' .venv-lock/freeze
	{ echo '# Every package of the venv, pinned: core dependencies + the train, dev, bench and ray extras.'; \
	  echo '# Written by `make lock` (fresh venv, $(TORCH) + the newest versions pyproject.toml allows,'; \
	  echo '# then pip freeze --all without the project). Do not edit by hand: run `make lock`.'; \
	  echo '# `make venv` installs exactly this, with plain pip: pip install --no-deps -r $(LOCK)'; \
	  cat .venv-lock/freeze; } > $(LOCK)
	rm -rf .venv-lock

# Not in CI: the test suite on the newest allowed versions (no lock), so drift shows up early.
test-latest:
	$(call fresh-newest,.venv-latest)
	.venv-latest/bin/python -m pytest -q -n 2 -p no:cacheprovider

clean:
	rm -rf $(VENV) .venv-latest .venv-lock build *.egg-info
