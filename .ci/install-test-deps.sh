#!/usr/bin/env bash
# Everything the tests need from Debian: a PostgreSQL server (the store tests start their
# own) and Chromium (the report is rendered headless). Idempotent; installs only what is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/install-postgres.sh"
bash "$here/install-chromium.sh"
