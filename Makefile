# The README's commands. Every target that runs code bootstraps first (scripts/bootstrap.sh is idempotent
# and fast when nothing changed), so a fresh clone needs only `make test` or `make demo`.
PY := .venv/bin/python
PYTEST := $(PY) -m pytest
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k broker -x"`.
PYTEST_ARGS ?=

.PHONY: bootstrap test test-all soak demo bench clean install-gateway uninstall-gateway flash selftest monitor ports

bootstrap:
	@bash scripts/bootstrap.sh

# Everything except the slow soak tests (the CI command, via .ci/run).
test: bootstrap
	$(PYTEST) -m "not slow" -q --durations=15 $(PYTEST_ARGS)

test-all: bootstrap
	$(PYTEST) -q --durations=25 $(PYTEST_ARGS)

# Only the slow soak tests.
soak: bootstrap
	$(PYTEST) -m slow -q --durations=25 $(PYTEST_ARGS)

demo: bootstrap
	$(PY) -m simulator.demo

# Each bench script prints its own figures; they run one after the other so they do not disturb each other.
bench: bootstrap
	@set -e; for script in $$(ls bench/*.py 2>/dev/null | sort); do \
		echo "== $$script"; PYTHONPATH=$(CURDIR) $(PY) $$script; \
	done

# The gateway as a systemd service, as root (docs/operations.md). Uses the system Python, not .venv.
# `make install-gateway DESTDIR=/some/root` lays the files out under another root (no user, no
# systemctl); PREFIX, UNITDIR, PYTHON and PIP_ARGS are read too (make passes command-line variables to
# the script's environment). Uninstall keeps config, registry and spool unless PURGE=1.
install-gateway:
	@bash scripts/install-gateway.sh

uninstall-gateway:
	@bash scripts/uninstall-gateway.sh

# The technician's tools (docs/technician.md), e.g. `make flash PORT=/dev/ttyUSB0 DEVICE=bin-0042
# LINK_PORT=/dev/ttyUSB1`; the registry comes from REGISTRY=, $KERBLINE_REGISTRY or the gateway's config.
KERBLINE := .venv/bin/kerbline
TOOL_ARGS = $(if $(REGISTRY),--registry $(REGISTRY))
flash: bootstrap
	$(KERBLINE) device flash $(DEVICE) --port $(PORT) $(if $(LINK_PORT),--link-port $(LINK_PORT)) $(TOOL_ARGS) $(FLASH_ARGS)

selftest: bootstrap
	$(KERBLINE) device selftest $(DEVICE) --port $(PORT) $(TOOL_ARGS)

monitor: bootstrap
	$(KERBLINE) device monitor $(DEVICE) $(if $(PORT),--port $(PORT)) $(if $(CONSOLE),--console $(CONSOLE)) $(TOOL_ARGS)

ports: bootstrap
	$(KERBLINE) device ports

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .hypothesis test-artifacts
	find . -path ./.venv -prune -o \( -name __pycache__ -o -name '*.mpy' \) -print0 | xargs -0 rm -rf
