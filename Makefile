# Developer commands. `make` formats, builds, lints and tests.
PYTHON ?= python3
DEV := .venv
BIN := $(DEV)/bin

.DEFAULT_GOAL := all
.PHONY: all help install build-dev build-prod format lint test bench fuzz

all: format build-dev lint test ## format, build, lint and test

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

install: ## a dev virtualenv (.venv) with the package built in place and the test tools
	$(PYTHON) -m venv $(DEV)
	$(BIN)/pip install -q --upgrade pip maturin
	$(BIN)/pip install -q pytest pytest-timeout hypothesis mypy ruff pyrsistent SpiffWorkflow typing_extensions atheris dbos opentelemetry-sdk "psycopg[binary,pool]" procrastinate
	$(BIN)/maturin develop --release

build-dev: ## rebuild the package in .venv after a Rust change
	$(BIN)/maturin develop --release

build-prod: ## the release wheel, in dist/
	$(BIN)/maturin build --release --out dist

format: ## format Rust and Python
	cargo fmt --all
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint: ## every linter and the stub check, on the dev build
	cargo fmt --all --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --no-default-features --all-targets -- -D warnings
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd $(DEV) && bin/python -m mypy.stubtest hephaestus --allowlist ../.mypy-stubtest-allowlist
	$(BIN)/mypy --strict tests/test_typing.py python/hephaestus

test: ## the whole test suite against a freshly built wheel (what CI runs)
	bash scripts/test.sh

bench: ## the side-by-side benchmarks; writes BENCHMARKS.md
	$(BIN)/python benchmarks/bench_instance.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/bench_engine.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/bench_runtime.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/bench_postgres.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/bench_scaleout.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/bench_control_flow.py --write BENCHMARKS.md

fuzz: ## ten minutes of atheris on the instance parsers
	cd fuzz && ../$(BIN)/python fuzz_instance.py -max_total_time=600 corpus
