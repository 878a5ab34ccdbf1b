# Two commands do all set-up on a fresh machine:
#   make run    -> installs into .venv, then: snakemake --cores all results/metrics.csv
#   make test   -> installs into .venv, then: pytest (unit tests + the real workflow on config/tiny.yaml)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: setup run test tables lint schema clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(FIND_LINKS) -c constraints.txt -e '.[test]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/snakemake --cores $(CORES) results/metrics.csv

# As root, also installs single-node SLURM + munge (Debian packages) for tests/test_slurm.py.
test: setup
	@if [ "$$(id -u)" = "0" ]; then scripts/install-slurm.sh; else echo "not root: SLURM tests will be skipped"; fi
	$(BIN)/python -m pytest -v

tables: setup
	$(BIN)/snakemake --cores $(CORES) results/tables/all.md --configfile config/tables.yaml

lint: setup
	$(BIN)/snakemake --lint

schema: setup
	$(BIN)/python -m matfuse.config --schema > workflow/schemas/config.schema.json

clean:
	rm -rf results logs benchmarks .snakemake
