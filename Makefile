# The two commands: `make run` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install system-deps run test typecheck bench bench-compare bench-inference bench-stream clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Redis, PostgreSQL, Chromium and promtool for the suite: installed with apt-get as root (or
# passwordless sudo), else the exact command to run is printed.
system-deps:
	@bash tests/system_deps.sh

# serve migrates the embedded SQLite database itself and prints one block with the URL,
# the demo key and the console login.
run: install
	$(VENV)/bin/litegate serve --demo --host $(HOST) --port $(PORT)

test: system-deps install typecheck
	$(PY) -m pytest -q

# The core is checked strictly, the console at mypy's default level.
typecheck: install
	$(PY) -m mypy --strict litegate
	$(PY) -m mypy admin

bench: install
	$(PY) bench/proxy.py

# This checkout against REF (default: the previous commit), side by side in one run.
REF ?= HEAD~1
bench-compare: install
	$(PY) bench/proxy.py --targets mock,litegate --refs $(REF)

bench-inference: install
	bench/peers_setup.sh pytriton || true  # a peer that cannot install is reported as not run
	$(PY) bench/inference.py

bench-stream: install
	bench/peers_setup.sh litellm portkey || true
	$(PY) bench/stream.py

clean:
	rm -rf $(VENV) .litegate .pytest_cache
