# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo test bench bench-quick clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch that lies on this machine's disk; an unpinned torch would pull a
	# multi-GB CUDA build. Users with their own torch (>=2.4) keep it.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/finemem demo

test: install
	$(PY) -m pytest

bench-quick: install
	$(PY) bench/train_overhead.py --quick
	$(PY) bench/engine.py --quick
	$(PY) bench/membership.py --quick
	$(PY) bench/extract.py --quick

bench: install
	$(PY) bench/train_overhead.py
	$(PY) bench/engine.py
	$(PY) bench/membership.py
	$(PY) bench/extract.py

clean:
	rm -rf $(VENV) runs .pytest_cache
