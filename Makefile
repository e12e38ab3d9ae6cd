# fedfleet: `make demo` runs the system on the embedded defaults, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS ?=

.PHONY: demo test lint servers clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/fedfleet demo $(ARGS)

# The real servers the integration tests start themselves, and the browser that opens the
# dashboard (Debian packages; Playwright drives this Chromium and never downloads one).
servers:
	@if ! [ -x /usr/sbin/mosquitto ] || ! command -v mosquitto_pub >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mosquitto mosquitto-clients; \
	fi
	@if ! command -v chromium >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy federation devices gateway broker fedfleet

test: $(STAMP) servers lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) fedfleet-data test-artifacts
