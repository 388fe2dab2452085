#!/usr/bin/env bash
# Debian's Chromium for the report tests (headless screenshots). Idempotent.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "install-chromium: found $(chromium --version 2>/dev/null | head -1)"
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "install-chromium: chromium is missing and this is not root: install Debian's chromium" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "install-chromium: installed $(chromium --version 2>/dev/null | head -1)"
