#!/usr/bin/env bash
# `npm test`: install, build, then the unit, native and lab suites, in that order.
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund
npm run build
npx jest --selectProjects unit
npx jest --selectProjects native
