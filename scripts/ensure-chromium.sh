#!/bin/sh
# Make sure Debian's Chromium is on the machine for tests/test_console.py (the web console in a
# real browser, driven by Playwright with its executable path set: Playwright's own browser
# download is never used). Installs the package as root with apt-get when it is missing;
# anywhere else it says so and returns 0, and the test skips with that reason (or fails under
# CI=true, where the browser test must run).
set -u

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: chromium is not installed and this is not root with apt-get;" \
         "tests/test_console.py will be skipped (install Debian's chromium to run it)" >&2
    exit 0
fi
echo "ensure-chromium: installing chromium with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends chromium fonts-noto-color-emoji >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-noto-color-emoji >/dev/null \
        || echo "ensure-chromium: apt-get could not install chromium; tests/test_console.py will be skipped" >&2
fi
exit 0
