#!/usr/bin/env bash
# The test suite, from a fresh Debian 12 machine: installs what is missing, builds forge
# (Release), runs every ctest test (unit, multi-rank under mpirun, end-to-end), then builds
# and trains examples/custom_model against an installed forge (scripts/example-check.sh).
# Extra arguments go to ctest, e.g. scripts/test.sh -L unit
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$FORGE_ROOT"
scripts/setup.sh
scripts/build.sh Release
cd "$FORGE_BUILD"
# Serial on purpose: multi-rank tests start 2-3 processes each on a 2-core machine.
ctest --output-on-failure "$@"
# forge installed and used as a package by a project of its own (examples/custom_model).
"$FORGE_ROOT/scripts/example-check.sh"
