#!/usr/bin/env bash
# Prepare the test environment, then run `cargo test` with the given arguments.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/test-env.sh"
cd "$repo"
exec cargo test "$@"
