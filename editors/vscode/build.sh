#!/usr/bin/env bash
# Build, test and package the sera VS Code extension; exits non-zero on any failure.
#   npm ci (package-lock.json) -> tsc -> unit and protocol tests -> sera-<version>.vsix
# The protocol tests start the real `sera lsp`: $SERA_BIN, by default the repository's
# .venv/bin/sera (bash .ci/run creates it). Needs Node 20+ and the npm registry (for npm ci).
set -euo pipefail
cd "$(dirname "$0")"

rm -rf out ./*.vsix
npm ci --no-audit --no-fund
npm run build
npm test
npm run package
