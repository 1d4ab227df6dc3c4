#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it: Rust format, lints and
# unit tests; then the release wheel, installed into a fresh virtualenv, under
# ruff, stubtest, mypy --strict and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${PYTHON:-python3}
venv=${TEST_VENV:-$root/.venv-test}

step() { printf '\n== %s\n' "$*"; }

step "Tools: rustfmt and clippy; Graphviz, tmux and PostgreSQL for their tests"
rustup component add clippy rustfmt >/dev/null 2>&1 || true
missing=()
command -v dot >/dev/null || missing+=(graphviz)
command -v tmux >/dev/null || missing+=(tmux)
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing ${missing[*]} (apt-get install ${missing[*]}): their checks will be skipped"
    fi
fi

step "Rust: format, clippy (with and without the python feature), core unit tests"
cargo fmt --all --check
cargo clippy --all-targets -- -D warnings
cargo clippy --no-default-features --all-targets -- -D warnings
cargo test --no-default-features

step "Wheel: build (release, abi3) and install into a fresh virtualenv"
rm -rf "$venv" dist
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip maturin
"$venv/bin/maturin" build --release --out dist
wheel=$(ls dist/hephaestus_core-*.whl)
"$venv/bin/python" -m pip install -q "${wheel}[test]"

step "Python: ruff, stubtest, mypy --strict"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
# From another directory, so the stubs and the module come from the wheel.
(cd "$venv" && bin/python -m mypy.stubtest hephaestus --allowlist "$root/.mypy-stubtest-allowlist")
"$venv/bin/mypy" --strict tests/test_typing.py
(cd "$venv" && bin/mypy --strict -p hephaestus)

step "pytest (against the installed wheel)"
"$venv/bin/python" -m pytest
