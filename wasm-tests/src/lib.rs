//! Nothing here: the suites are in `tests/`, run in Chrome by `scripts/wasm-test.sh`.
