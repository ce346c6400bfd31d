#!/usr/bin/env bash
# Installs what the test suite needs beyond cargo: pyiso8583 (the
# independent ISO 8583 implementation for interoperability tests),
# Debian's chromium with chromedriver (the virtual terminal's browser test),
# Debian's postgresql server binaries (the archive's PostgreSQL tests) and
# Debian's etcd-server (the cluster crate's tests).
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

if ! python3 -c 'import iso8583' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
fi
if [ -f .ci/install-browser.sh ]; then
  bash .ci/install-browser.sh
fi

# The archive's PostgreSQL tests (archive/tests/postgres.rs) start their own
# throwaway server from /usr/lib/postgresql/<version>/bin, so no cluster is
# created or started here: createcluster.conf says so before the package's
# postinst reads it, and dpkg/ucf keep that file rather than ask.
if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
  if [ ! -f /etc/postgresql-common/createcluster.conf ]; then
    $SUDO mkdir -p /etc/postgresql-common
    echo 'create_main_cluster = false' | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 \
    apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confold postgresql
fi

# The cluster tests (cluster/tests/etcd.rs) start their own etcd from
# /usr/bin/etcd on free loopback ports, so the packaged service must not
# start: a policy-rc.d that answers 101 ("action forbidden") makes
# invoke-rc.d skip it during the install, and is removed afterwards unless
# one was already there (containers often ship one). Without systemd as
# PID 1 nothing else would start it.
if ! command -v etcd >/dev/null; then
  POLICY=/usr/sbin/policy-rc.d
  OWN_POLICY=""
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    OWN_POLICY=1
    # Removed even when the install fails.
    trap '$SUDO rm -f "$POLICY"' EXIT
  fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confold etcd-server
  if [ -n "$OWN_POLICY" ]; then
    $SUDO rm -f "$POLICY"
    trap - EXIT
  fi
fi
