#!/usr/bin/env bash
# Everything the tests need from Debian: a PostgreSQL server (the store tests start their
# own) and Chromium (the report is rendered headless). Idempotent; installs only what is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/install-postgres.sh"
bash "$here/install-chromium.sh"
# curl: the documentation's tutorial (tests/test_docs.py) sends its request with it.
if ! command -v curl >/dev/null 2>&1; then
  if [ "$(id -u)" != "0" ]; then
    echo "install-test-deps: curl is missing and this is not root: install Debian's curl" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
fi
