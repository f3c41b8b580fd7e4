# The two commands the README gives: `make run` and `make test`. Both build the virtualenv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
ANNLAB_HOME ?= ./.annlab
export ANNLAB_HOME

.PHONY: run test venv lint migrate datasets browsers bench docs

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

migrate: venv
	$(BIN)/alembic upgrade head

# Fashion-MNIST from Debian's package when we may install it; tests that need it say so otherwise.
datasets:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null \
		|| echo "note: could not apt-get dataset-fashion-mnist"; fi

# Chromium and its driver for the dashboard's browser test (tests/ui), the same way; it skips
# without them.
browsers:
	@if ! command -v chromedriver >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
		|| echo "note: could not apt-get chromium chromium-driver"; fi

run: venv migrate
	@echo "annlab: API docs at http://$(HOST):$(PORT)/docs  (data in $(ANNLAB_HOME))"
	@echo "annlab: without API keys only this machine is served; make one: $(BIN)/annlab key create NAME"
	@exec $(BIN)/python -m workers.launch --host $(HOST) --port $(PORT)

test: venv datasets browsers docs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The docs site (MkDocs, Material theme) from docs/ into site/; --strict fails on a broken link.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Benchmarks, each printing its lines of figures (CPU here; a GPU when there is one).
# time_to_accuracy trains the default CNN on all of Fashion-MNIST (7-25 minutes on 2 CPU
# cores); TTA_ARGS="--max-train 10000 --epochs 5 --target 0.88" gives a quick figure.
TTA_ARGS ?=
bench: venv datasets
	$(BIN)/python benchmarks/dispatch_latency.py
	$(BIN)/python benchmarks/batching.py
	$(BIN)/python benchmarks/service_overhead.py
	$(BIN)/python benchmarks/service_overhead.py --family cnn --dataset fashion_mnist --max-train 10000 --epochs 2
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/listing.py
	$(BIN)/python benchmarks/threads.py
	$(BIN)/python benchmarks/job_overhead.py
	$(BIN)/python benchmarks/sweeps.py
	$(BIN)/python benchmarks/time_to_accuracy.py $(TTA_ARGS)

lint: venv
	$(BIN)/ruff check .
