#!/usr/bin/env bash
# Debian's Chromium and its chromedriver, for the report tests (headless screenshots) and
# the browser tests of `qemlflow ui` (Selenium drives /usr/bin/chromedriver: nothing is
# downloaded at test time). Idempotent: installs only what is missing.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != "0" ]; then
    echo "install-chromium: missing ${missing[*]} and this is not root: install Debian's ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install-chromium: installed ${missing[*]}"
fi
echo "install-chromium: found $(chromium --version 2>/dev/null | head -1)"
echo "install-chromium: found $(chromedriver --version 2>/dev/null | head -1)"
