#!/usr/bin/env bash
# Install everything the tests need (Debian packages + Python test extras) and run the whole suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
for bin in storescu:dcmtk dciodvfy:dicom3tools; do
  command -v "/usr/bin/${bin%%:*}" >/dev/null 2>&1 || need_pkgs+=("${bin##*:}")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
