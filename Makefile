# The two commands that matter: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
CONFIG ?= config/gateway.toml
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: run test test-python build build-deps venv deps system-deps test-deps bench bench-only check-config clean deb deb-test

run: build
	$(VENV)/bin/sip-push-gateway --config $(CONFIG) run

test: system-deps test-deps build
	$(PY) -m pytest $(PYTEST_ARGS)
	@echo "== the same suite on the pure-Python twins"
	GATEWAY_NO_EXTENSIONS=1 $(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)
	@echo "== the Debian package"
	$(MAKE) deb-test

# Every benchmark in bench/ (pytest-benchmark), then the capacity and restart-storm scenario,
# then bench/report.md. QUICK=1: a reduced run (fewer registrations, 5,000
# instances held for three 30 s refresh cycles instead of 100,000 for three 300 s ones;
# every benchmark still runs, with fewer rounds and shorter loads: bench/quick.py).
# A failing benchmark does not stop the others: the report says what was not measured.
QUICK ?=
BENCH_OUT := bench/results
bench: system-deps test-deps build
	$(MAKE) --no-print-directory bench-only PY=$(PY) QUICK=$(QUICK)

bench-only:
	@mkdir -p $(BENCH_OUT)
	@cut -d' ' -f1-3 /proc/loadavg > $(BENCH_OUT)/loadavg-start
	-QUICK=$(QUICK) $(if $(QUICK),REGISTRATION_BENCH_COUNT=3000) $(PY) -m pytest bench --benchmark-only \
	  $(if $(QUICK),--benchmark-max-time=0.2 --benchmark-min-rounds=3) \
	  --benchmark-columns=min,median,ops -p no:cacheprovider \
	  --benchmark-json=$(BENCH_OUT)/benchmarks.json --junitxml=$(BENCH_OUT)/junit.xml $(PYTEST_ARGS)
	-QUICK=$(QUICK) $(PY) -m bench.scenarios.capacity --out $(BENCH_OUT)/capacity.json
	$(PY) bench/report.py --benchmarks $(BENCH_OUT)/benchmarks.json --junit $(BENCH_OUT)/junit.xml \
	  --capacity $(BENCH_OUT)/capacity.json --out bench/report.md \
	  --command "make bench$(if $(QUICK), QUICK=$(QUICK))" --load-start "$$(cat $(BENCH_OUT)/loadavg-start)"

# The Debian package in dist/ (packaging/README.md), and its installation test.
deb:
	packaging/build-deb.sh

deb-test:
	packaging/deb-test.sh

check-config: build
	$(VENV)/bin/sip-push-gateway --config $(CONFIG) check-config

# --- setup -----------------------------------------------------------------------------

# Installs the Debian packages named in $(1) that are missing (as root, or with sudo).
define apt-install
	@missing="$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done | xargs)"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

# What the virtual environment and the Cython build need: venv, a C compiler, Python's
# headers and OpenSSL's (the registration wire hashes with libcrypto).
BUILD_PACKAGES := python3-venv python3-dev gcc libssl-dev

build-deps:
	$(call apt-install,$(BUILD_PACKAGES))

$(VENV)/bin/python: | build-deps
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

venv: $(VENV)/bin/python

$(VENV)/.deps: requirements.txt | venv
	$(PIP) install -r requirements.txt cython
	touch $@

$(VENV)/.test-deps: requirements.txt requirements-test.txt | venv
	$(PIP) install -r requirements.txt -r requirements-test.txt
	touch $@

deps: $(VENV)/.deps
test-deps: $(VENV)/.test-deps

# Builds the Cython extensions in place and installs the `sip-push-gateway` command.
build: build-deps deps
	$(PY) setup.py -q build_ext --inplace
	$(PIP) install --no-deps --no-build-isolation -e .

# Debian packages the tests drive (Kamailio, SIPp, ...): installed when we are root or
# have sudo; otherwise the tests that need them say what is missing.
system-deps:
	$(call apt-install,$$(grep -v '^#' tests/apt-packages.txt | xargs))

clean:
	rm -rf build dist *.egg-info gateway/_*.so _ext/*.c .pytest_cache
