# One-command entry points. Every install is constrained to torch==2.13.0 (constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.prunebench-installed
CORES  ?= 2
# the browser tests drive Debian's chromium (never `playwright install`)
CHROMIUM ?= /usr/bin/chromium
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser slurm-packages test-slurm test test-fast grid smoke site lint clean-smoke

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "the browser tests need Debian's chromium at $(CHROMIUM)"; exit 1; }
	$(SUDO) apt-get install -y --no-install-recommends chromium || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; }

browser: $(CHROMIUM)

test: setup browser     ## set up, then the workflow's lint and every test (slow end-to-end and browser ones included)
	$(BIN)/snakemake --lint
	$(BIN)/python -m pytest -q -m "not slurm" tests

test-fast: setup browser
	$(BIN)/python -m pytest -q -m "not slow and not slurm" tests

slurm-packages:         ## Debian packages of the throwaway SLURM test cluster (root)
	$(SUDO) apt-get install -y --no-install-recommends slurm-wlm slurmctld slurmd slurmdbd \
	  slurm-client munge mariadb-server

test-slurm: setup slurm-packages  ## the SLURM profile on a single-node cluster (root; docs/scale-out.md)
	$(BIN)/python -m pytest -q -m slurm tests/e2e/test_slurm.py

grid: setup             ## set up, then the default grid and the leaderboard (site/_build/)
	$(BIN)/snakemake --cores $(CORES) --keep-going

smoke: setup
	$(BIN)/snakemake --cores $(CORES) --configfile config/smoke.yaml

site: setup             ## rebuild only the leaderboard from results/ (runs nothing else)
	$(BIN)/python -m bench leaderboard --results results --out site/_build

lint: setup
	$(BIN)/snakemake --lint
