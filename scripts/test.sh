#!/usr/bin/env bash
# Install everything the tests need (Debian packages + Python test extras) and run the whole suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
for bin in bin/storescu:dcmtk bin/dciodvfy:dicom3tools sbin/Orthanc:orthanc; do
  command -v "/usr/${bin%%:*}" >/dev/null 2>&1 || need_pkgs+=("${bin##*:}")
done
# node + npm run tests/viewer (the SR/SEG read with dcmjs and @cornerstonejs/adapters, as OHIF does);
# chromium and Orthanc's DICOMweb plugin run the real OHIF build there
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || need_pkgs+=(nodejs npm)
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need_pkgs+=(orthanc-dicomweb)
# curl: the admin guide's /healthz and /metrics examples (tests/cli/test_admin_guide.py runs them)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
# PostgreSQL: tests/pgserver.py runs its own server (initdb in a temporary directory, a free port)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_pkgs+=(postgresql)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # The tests start their own Orthanc and PostgreSQL on free ports: keep the packages' services from starting
  # (policy-rc.d exit 101 = "not allowed"; only where the machine has no policy of its own). postgresql's
  # postinst creates its 'main' cluster unstarted, then starts it through invoke-rc.d (deb-systemd-invoke under
  # systemd): both obey this.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  [ -z "$own_policy" ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

[ -d tests/viewer/node_modules ] || npm ci --prefix tests/viewer --no-audit --no-fund --ignore-scripts
# the published OHIF build (its npm package ships dist/ only; its dependencies are not needed to serve it)
if [ ! -f tests/viewer/ohif/package/dist/index.html ]; then
  mkdir -p tests/viewer/ohif
  (cd tests/viewer/ohif && npm pack @ohif/app@3.13.2 --silent >/dev/null && tar xzf ohif-app-3.13.2.tgz && rm ohif-app-3.13.2.tgz)
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
status=0
# The whole suite runs on the embedded SQLite journal (the journal's own tests, the multi-process test and
# `journal copy` on PostgreSQL too), and alongside it the service's exactly-once core again on a PostgreSQL
# journal: kill -9 at every stage, a crash loop, supersession and IOCM rejection (about 5 minutes; it fills the
# gaps where the suite's workers wait). The whole suite on PostgreSQL, end-to-end and split-series tests included:
# SVDMARK_TEST_JOURNAL=postgresql bash scripts/test.sh.
pg_log=""
if [ $# -eq 0 ] && [ "${SVDMARK_TEST_JOURNAL:-sqlite}" != postgresql ]; then
  pg_log=$(mktemp)
  SVDMARK_TEST_JOURNAL=postgresql .venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/integration/test_crash.py tests/integration/test_supersession.py >"$pg_log" 2>&1 &
  pg_pid=$!
  trap 'kill "$pg_pid" 2>/dev/null; exit 130' INT TERM
fi
# Two pytest workers (pytest-xdist), one test file each at a time: most tests wait on servers and subprocesses,
# and every test has its own free ports and temporary directories. SVDMARK_TEST_WORKERS=0 runs in one process.
workers=(-n "${SVDMARK_TEST_WORKERS:-2}" --dist loadfile)
[ "${SVDMARK_TEST_WORKERS:-2}" != 0 ] || workers=()
.venv/bin/python -m pytest -q -p no:cacheprovider "${workers[@]}" "$@" || status=$?
if [ -n "$pg_log" ]; then
  wait "$pg_pid" || status=$?
  echo "=== the exactly-once core on a PostgreSQL journal ==="
  cat "$pg_log"
  rm -f "$pg_log"
fi
exit $status
