#!/usr/bin/env bash
# Copies the last benchmark report (REPORT.md, its plots, results.json, meta.json) from
# $BUILD/bench to docs/bench/, the committed copy. Usage: BUILD=build tools/bench/publish.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
src="$BUILD/bench"
[[ -f "$src/REPORT.md" && -f "$src/results.json" ]] || { echo "publish: no report in $src (run make bench)" >&2; exit 1; }
mkdir -p docs/bench
rm -f docs/bench/*.png
cp "$src/REPORT.md" "$src/results.json" "$src/meta.json" docs/bench/
for p in "$src"/*.png; do [[ -f "$p" ]] && cp "$p" docs/bench/; done
echo "publish: $(ls docs/bench | wc -l) files in docs/bench/"
