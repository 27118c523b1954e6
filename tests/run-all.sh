#!/usr/bin/env bash
# Runs every check of the project: formatting, clippy (warnings are errors), unit tests,
# end-to-end tests and librdkafka's regression suite against a real broker. Installs what the
# tests need when it is missing, so it works on a fresh machine; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# A fresh debug build of the workspace takes about 10 GB under target/ (and the tests' data
# folders a few more under /tmp): say what there is, so a build that runs out reads as such.
log "disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free here, $(df -h --output=avail /tmp | tail -1 | tr -d ' ') under /tmp"
# CI builds once from a clean clone: incremental artifacts would only cost time and disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

log "toolchain and targets from rust-toolchain.toml"
rustup toolchain install >/dev/null
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

log "third-party clients the end-to-end tests drive (kcat, confluent-kafka with Avro and JSON Schema, kafka-python), a browser for the console (chromium, chromedriver), and the checkers of its OpenAPI document and metrics"
if ! command -v kcat >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq kcat chromium chromium-driver
fi
python3 -c 'import confluent_kafka, confluent_kafka.schema_registry.avro, confluent_kafka.schema_registry.json_schema, fastavro, jsonschema, kafka, prometheus_client, openapi_spec_validator' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    'confluent-kafka[avro,json,schemaregistry]' kafka-python prometheus-client openapi-spec-validator
kcat -V 2>&1 | sed -n 1p
chromium --version
chromedriver --version
python3 -c 'import confluent_kafka, kafka; print("confluent-kafka", confluent_kafka.version()[0], "librdkafka", confluent_kafka.libversion()[0], "kafka-python", kafka.__version__)'

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Binaries and tests in one build: the tests' dev-dependencies (the WebDriver client) turn on
# features of crates the broker shares, so a binary built alone would be built twice.
log "build the weir binary the end-to-end tests run, and the tests"
cargo build --workspace --bins --tests --locked

log "cargo test"
cargo test --workspace --locked -- --show-output

# librdkafka's own regression suite against a real `weir serve`, every test that needs a
# broker (about 6 minutes here, after about 1 minute building it the first time); the known
# failures are listed with their reasons in tests/librdkafka-expected-failures.txt.
log "librdkafka's regression suite against weir serve"
bash tests/librdkafka-suite.sh
