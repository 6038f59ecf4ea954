#!/bin/sh
# Make sure the programs the tests drive are on the machine, installing the missing ones with
# one apt-get as root on Debian/Ubuntu:
#   nginx (nginx-light)  tests/test_load_balancer.py runs its own nginx with deploy/nginx.conf
#   haproxy              tests/test_load_balancer.py checks deploy/haproxy.cfg with haproxy -c
#   chromium             tests/test_console.py drives the web console through Playwright
# The tests start their own instances (own config, ports and files) and stop them; a system
# service a package's install started is stopped again at once. Anywhere else this says what is
# missing and returns 0, and those tests skip with that reason (test_console.py fails under
# CI=true, where the browser test must run).
set -u

missing=""
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx-light"
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing="$missing haproxy"
[ -x /usr/bin/chromium ] || missing="$missing chromium fonts-noto-color-emoji"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-test-tools: missing$missing and this is not root with apt-get; the tests" \
         "that need them will be skipped (install them to run those)" >&2
    exit 0
fi
echo "ensure-test-tools: installing$missing with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086  # one word per package
if ! apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null \
        || echo "ensure-test-tools: apt-get could not install$missing; the tests that need them" \
                "will be skipped" >&2
fi

# Where service start-up is allowed (no policy-rc.d), nginx and haproxy start as system
# services on install: stop them, the tests bring their own.
for name in nginx haproxy; do
    pidfile=/run/$name.pid
    [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null || continue
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$name" 2>/dev/null; then
        systemctl stop "$name" || true
        systemctl disable --quiet "$name" 2>/dev/null || true
    else
        kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
done
exit 0
