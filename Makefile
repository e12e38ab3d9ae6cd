# fedfleet: `make demo` runs the system on the embedded defaults, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS ?=

.PHONY: demo test lint servers clean

# The demo needs the runtime alone; the tests add their tools and the optional extras.
$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(RUNTIME)
	$(BIN)/fedfleet demo $(ARGS)

# The real servers the integration tests start themselves, and the tools they run (Debian
# packages, installed if missing): Mosquitto, victoria-metrics (a time-series server with the
# InfluxDB v2 write API), docker-compose (validates docker-compose.yml; no engine needed),
# Chromium for the dashboard (Playwright drives it and never downloads one).
servers:
	@missing=""; \
	[ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_pub >/dev/null || missing="$$missing mosquitto-clients"; \
	command -v victoria-metrics >/dev/null || missing="$$missing victoria-metrics"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			--no-install-recommends $$missing; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy federation devices gateway broker analytics fedfleet

# Two worker processes: the integration tests, one after another, on one (tests/conftest.py)
# and everything else on the other.
TEST_WORKERS ?= 2

test: $(STAMP) servers lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

clean:
	rm -rf $(VENV) fedfleet-data test-artifacts
