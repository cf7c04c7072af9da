#!/usr/bin/env bash
# Headless Chromium and its driver from Debian's packages, for tests/integration/test_console_browser.py
# (Selenium drives /usr/bin/chromium through /usr/bin/chromedriver; nothing is downloaded at test time).
# Installed with apt only when one is missing; `apt-get update` only when the install fails without it.
# Off CI a machine without apt (or root) just skips that test, with the reason; in CI (CI=true) it fails here.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi
fail() {
  if [ "${CI:-}" = "true" ]; then
    echo "ensure-browser: $1; CI runs the console's browser test: apt-get install -y chromium chromium-driver" >&2
    exit 1
  fi
  echo "ensure-browser: $1; the console's browser test will be skipped (apt-get install -y chromium chromium-driver)" >&2
}
command -v apt-get >/dev/null 2>&1 || { fail "no apt-get on this machine"; exit 0; }
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else fail "not root (and no sudo)"; exit 0; fi
fi
install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
if ! install; then
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || { fail "apt-get update failed"; exit 0; }
  install || { fail "apt-get install chromium chromium-driver failed"; exit 0; }
fi
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || fail "installed, but /usr/bin/chromium or /usr/bin/chromedriver is missing"
exit 0
