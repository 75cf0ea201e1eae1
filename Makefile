# Everything a fresh machine needs: Python 3.11 with pip. The venv is built from the lock file.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean lock docker-base docker-build docker-test

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m replay.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup  # the Ray tests share one worker (and one Ray)

# Benchmarks print figures (they need ../shared/realdata for the real Binance frames).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_sync.py
	$(BIN)/python benchmarks/bench_recorder.py
	$(BIN)/python benchmarks/bench_validate.py
	$(BIN)/python benchmarks/bench_replay.py
	$(BIN)/python benchmarks/bench_sim.py  # ends with bench_scale.py (first time: ~5 CPU minutes to generate /tmp/ld)
	$(BIN)/python benchmarks/bench_sweep.py  # starts and ends its own local Rays (~1.5 minutes)

lint: $(STAMP)
	$(BIN)/ruff check recorder replay schemas tests benchmarks

# Regenerate the lock files after changing dependencies in pyproject.toml (needs network to PyPI):
# requirements.lock (with dev tools) for .venv, requirements-runtime.lock for the Docker image.
lock:
	$(PYTHON) -m venv .lock-tools && .lock-tools/bin/pip install -q uv
	.lock-tools/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock
	.lock-tools/bin/uv pip compile pyproject.toml --python-version 3.11 -o requirements-runtime.lock
	rm -rf .lock-tools

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# --- Docker (see Dockerfile, docker/, config/crontab.example, config/compose.example.yaml) -------------
# No registry serves base images here, so the image is built on a local debootstrap base; elsewhere:
#   make docker-build DOCKER_BASE_IMAGE=python:3.11-slim-bookworm
DOCKER_IMAGE ?= avellaneda-mm:latest
DOCKER_BASE_IMAGE ?= avellaneda-base:bookworm

# Local Debian bookworm base (debootstrap from this machine's mirror); skipped when it already exists.
docker-base:
	bash -c '. docker/common.sh && ensure_docker'
	BASE_IMAGE=$(DOCKER_BASE_IMAGE) docker/make-base.sh

docker-build:
	bash -c '. docker/common.sh && ensure_docker'
	@if [ "$(DOCKER_BASE_IMAGE)" = avellaneda-base:bookworm ]; then BASE_IMAGE=$(DOCKER_BASE_IMAGE) docker/make-base.sh; fi
	IMAGE=$(DOCKER_IMAGE) BASE_IMAGE=$(DOCKER_BASE_IMAGE) docker/build.sh

# Builds base + image, records 20 s from the synthetic venue in the container, checks the Parquet output.
docker-test: $(STAMP)
	IMAGE=$(DOCKER_IMAGE) BASE_IMAGE=$(DOCKER_BASE_IMAGE) docker/docker-test.sh
