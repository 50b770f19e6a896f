#!/usr/bin/env bash
# Runs every test pricebeast has, on a fresh machine or a warm one: installs what is missing,
# then checks formatting and lints, then runs the unit, property and integration tests
# (the integration tests start the real binary on loopback ports).
#
#   scripts/test.sh            # everything
#   FUZZ_SECONDS=30 scripts/test.sh   # also run each fuzz target for 30 s (needs a few minutes to build)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  say "installing rustfmt and clippy"
  rustup component add rustfmt clippy
fi

# The PostgreSQL e2e tests (tests/e2e/postgres.rs) start throwaway clusters of their own with
# initdb and postgres from Debian's package; they need no running server.
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  say "installing PostgreSQL (initdb, postgres) for the PostgreSQL ledger tests"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # Only the programs: no "main" cluster made and started on port 5432 by the package.
  $sudo mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/pricebeast-tests.conf >/dev/null
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
fi

# The cluster and fallback e2e tests (tests/e2e/cluster.rs, fallback.rs) start redis-server
# processes of their own on free loopback ports; they need only the program, not the package's
# own server on 6379.
if ! command -v redis-server >/dev/null 2>&1; then
  say "installing redis-server for the cluster tests"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server
fi

# The Prometheus e2e test (tests/e2e/prometheus.rs) starts a prometheus of its own on a free
# loopback port, with its own config and data directory, and runs promtool; the package's own
# service (on 9090, with /etc/prometheus) is never what it talks to.
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  say "installing prometheus and promtool for the Prometheus test"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi

# The load-tool e2e tests (tests/e2e/loadtools.rs) run deploy/locust/locustfile.py with Locust
# from PyPI; where pip may not install into the system's Python (PEP 668), into a virtual
# environment under target/, where the tests look for it.
if ! command -v locust >/dev/null 2>&1 && [ ! -x target/locust/bin/locust ]; then
  say "installing Locust for the load-tool tests"
  if ! python3 -m pip install --quiet locust==2.47.0; then
    if ! python3 -m venv target/locust; then
      sudo=""
      [ "$(id -u)" -eq 0 ] || sudo="sudo"
      $sudo apt-get update -qq
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
      python3 -m venv target/locust
    fi
    target/locust/bin/python -m pip install --quiet locust==2.47.0
  fi
fi

# The k6 scripts' checks (tests/e2e/loadtools.rs) run `node --check` on them as the ES modules k6
# reads, and evaluate their stages under node; Debian's nodejs is enough.
if ! command -v node >/dev/null 2>&1; then
  say "installing node for the k6 script checks"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs
fi

# The command center test (tests/e2e/command_center.rs) drives Debian's headless Chromium over
# the DevTools protocol against a running server; it needs only the program.
if ! command -v chromium >/dev/null 2>&1; then
  say "installing chromium for the command center test"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi

# The systemd e2e tests (tests/e2e/systemd.rs) run systemd-analyze, systemd-sysusers and
# systemd-tmpfiles on the shipped unit files; they need the programs, not systemd running.
if ! command -v systemd-analyze >/dev/null 2>&1; then
  say "installing systemd's tools for the unit file tests"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd
fi

say "format"
cargo fmt --all -- --check

say "rust-version is the locked dependencies' minimum"
scripts/check-msrv.sh

say "lints"
cargo clippy --all-targets --locked -- -D warnings

say "unit, property and integration tests"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
cargo test --all-targets --locked 2>&1 | tee "$results"

if [ "${FUZZ_SECONDS:-0}" -gt 0 ]; then
  say "fuzzing each target for ${FUZZ_SECONDS}s"
  scripts/fuzz.sh "$FUZZ_SECONDS"
fi

# One closing line for every test binary together (pipefail above already failed the run if any
# binary failed).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$results"
