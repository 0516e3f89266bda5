# Loom developer entry points. Every target is idempotent and runs as root on a fresh
# Debian 12 box. Nothing here ever touches the system's default OVS instance: tests
# and the demo run private OVS instances inside their own network namespaces.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.NOTPARALLEL:

SYS_PYTHON := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
REQ_STAMP := $(VENV)/.requirements.stamp
APT_PACKAGES := openvswitch-switch openvswitch-common mininet iproute2 iputils-ping iperf3 \
	ethtool netcat-openbsd tcpdump python3-venv python3-pip make procps psmisc curl docker-compose \
	chromium isc-dhcp-client dnsmasq-base
# Lint/type-check only the source trees that exist and hold Python files (git keeps
# no empty directories, and mypy refuses a directory without any .py file).
py_dirs = $(strip $(foreach d,$(1),$(if $(shell find $(d) -name '*.py' -print -quit 2>/dev/null),$(d))))
LINT_DIRS = $(call py_dirs,controller apps topologies tests bench)
TYPE_DIRS = $(call py_dirs,controller apps topologies bench)
SANDBOX_DIR := /tmp/loom-sandbox
SANDBOX_STATE := /run/loom-sandbox

# One line and exit 2 when a target that needs root is asked for without it.
ROOT_GOALS := test demo bench fabric-demo
ifneq ($(filter $(ROOT_GOALS),$(MAKECMDGOALS)),)
ifneq ($(shell id -u),0)
$(error needs root for network namespaces and OVS: run sudo make $(MAKECMDGOALS))
endif
endif

.PHONY: help deps apt-deps pydeps require-root test unit lint demo bench clean distclean fabric-demo

help:
	@echo "make deps    install system packages (apt) and the Python venv ($(VENV))"
	@echo "make test    unit + integration tests, ruff, mypy (root: namespaces and OVS)"
	@echo "make unit    unit tests only (no root)"
	@echo "make lint    ruff + mypy"
	@echo "make demo    multi-host lab with two tenants and a connectivity matrix (root)"
	@echo "make bench   benchmarks (root)"
	@echo "make clean   remove caches and leftovers of dead test runs"

deps: apt-deps pydeps

# apt-get update + install only when a package is missing, and only the missing ones
# (installed packages are never upgraded as a side effect).
apt-deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -q '^install ok installed$$' \
	    || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: system packages present"; exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ]; then \
	  echo "deps: missing packages:$$missing; run as root: sudo make deps" >&2; exit 2; \
	fi; \
	echo "deps: installing$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -q; \
	apt-get install -y -q --no-install-recommends $$missing

# (Re)create the venv if missing or made without system site packages (Mininet comes
# from Debian), and pip install when requirements.txt is newer than the stamp.
pydeps:
	@if [ ! -x "$(PY)" ] || ! grep -qs '^include-system-site-packages = true' "$(VENV)/pyvenv.cfg"; then \
	  echo "deps: creating $(VENV)"; \
	  rm -rf "$(VENV)"; \
	  $(SYS_PYTHON) -m venv --system-site-packages "$(VENV)"; \
	fi
	@if [ ! -f "$(REQ_STAMP)" ] || [ requirements.txt -nt "$(REQ_STAMP)" ]; then \
	  echo "deps: pip install -r requirements.txt"; \
	  "$(PY)" -m pip install --disable-pip-version-check -q -r requirements.txt; \
	  touch "$(REQ_STAMP)"; \
	else \
	  echo "deps: $(VENV) up to date"; \
	fi

require-root:
	@if [ "$$(id -u)" -ne 0 ]; then \
	  echo "make $(MAKECMDGOALS): needs root for network namespaces and OVS; run: sudo make $(MAKECMDGOALS)" >&2; \
	  exit 2; \
	fi

# Runs every check even after a failure, then fails if any failed.
test: require-root deps
	@rc=0; \
	echo "== pytest"; "$(PY)" -m pytest -q tests || rc=1; \
	echo "== ruff check $(LINT_DIRS)"; "$(PY)" -m ruff check $(LINT_DIRS) || rc=1; \
	echo "== mypy $(TYPE_DIRS)"; "$(PY)" -m mypy $(TYPE_DIRS) || rc=1; \
	echo "== docker-compose config -q"; docker-compose config -q || rc=1; \
	if [ $$rc -ne 0 ]; then echo "make test: FAILED (see above)" >&2; fi; \
	exit $$rc

unit: pydeps
	"$(PY)" -m pytest -q tests/unit

lint: pydeps
	@rc=0; \
	"$(PY)" -m ruff check $(LINT_DIRS) || rc=1; \
	"$(PY)" -m mypy $(TYPE_DIRS) || rc=1; \
	exit $$rc

demo: require-root deps
	"$(PY)" -m topologies.demo

bench: require-root deps
	"$(PY)" -m bench

# Caches, plus what test runs that died before their teardown left behind (their
# namespaces, veths, daemons and kept workdirs; never anything of a live run, and
# never the system OVS).
clean:
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf .pytest_cache .mypy_cache .ruff_cache
	@if [ "$$(id -u)" -eq 0 ]; then $(SYS_PYTHON) -m topologies.netns sweep; $(SYS_PYTHON) -m topologies.neigh sweep; fi
	@for d in $(SANDBOX_DIR)/*-*; do \
	  [ -d "$$d" ] || continue; \
	  prefix=$$(basename "$$d"); prefix=$${prefix%%-*}; \
	  [ -e "$(SANDBOX_STATE)/$$prefix.json" ] || rm -rf "$$d"; \
	done

distclean: clean
	rm -rf "$(VENV)"

# A Mininet fabric (private OVS, userspace datapath) run by Loom: pingall and iperf.
FABRIC_TOPO ?= leafspine 2 3 2
FABRIC_ARGS ?= --start-controller --split --pingall --iperf h1,h5
fabric-demo: require-root deps
	"$(PY)" -m topologies.fabric run $(FABRIC_TOPO) $(FABRIC_ARGS)
