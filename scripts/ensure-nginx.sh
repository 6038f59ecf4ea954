#!/bin/sh
# Make sure an nginx binary is on the PATH for tests/test_load_balancer.py.
#
# The test runs its own nginx (its own config, prefix, pid and logs under a temporary folder, on
# free loopback ports) and stops it; it never uses a system nginx. This script only installs the
# binary when it is missing, as root on Debian/Ubuntu (nginx-light: the proxy, upstream hashing
# and WebSocket support the test needs, no extra modules). Anywhere else it says so and returns 0,
# and the test skips with that reason. If the package's install started the system service, it is
# stopped again at once.
set -u

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-nginx: nginx is not installed and this is not root with apt-get;" \
         "tests/test_load_balancer.py will be skipped (install nginx to run it)" >&2
    exit 0
fi
echo "ensure-nginx: installing nginx-light with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq nginx-light >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null \
        || echo "ensure-nginx: apt-get could not install nginx-light;" \
                "tests/test_load_balancer.py will be skipped" >&2
fi
# Where service start-up is allowed (no policy-rc.d), the package starts a system nginx on
# port 80: stop it, the tests bring their own.
if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
        systemctl stop nginx || true
        systemctl disable --quiet nginx 2>/dev/null || true
    else
        /usr/sbin/nginx -s quit 2>/dev/null || true
    fi
fi
exit 0
