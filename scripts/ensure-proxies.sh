#!/bin/sh
# Make sure the nginx and haproxy binaries are on the machine for tests/test_load_balancer.py.
#
# The test runs its own nginx (its own config, prefix, pid and logs under a temporary folder, on
# free loopback ports) and stops it; it never uses a system nginx. It runs `haproxy -c` on
# deploy/haproxy.cfg. This script only installs what is missing, as root on Debian/Ubuntu
# (nginx-light: the proxy, upstream hashing and WebSocket support the test needs, no extra
# modules; haproxy). Anywhere else it says so and returns 0, and the tests skip with that reason.
# If a package's install started its system service, it is stopped again at once.
set -u

if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ] && [ "$(id -u)" = 0 ] \
        && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-proxies: installing haproxy with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq haproxy >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq haproxy >/dev/null; } \
        || echo "ensure-proxies: apt-get could not install haproxy; its config check will be skipped" >&2
    if [ -s /run/haproxy.pid ] && kill -0 "$(cat /run/haproxy.pid)" 2>/dev/null; then
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet haproxy 2>/dev/null; then
            systemctl stop haproxy || true
            systemctl disable --quiet haproxy 2>/dev/null || true
        else
            kill "$(cat /run/haproxy.pid)" 2>/dev/null || true
        fi
    fi
fi

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-proxies: nginx is not installed and this is not root with apt-get;" \
         "tests/test_load_balancer.py will be skipped (install nginx to run it)" >&2
    exit 0
fi
echo "ensure-proxies: installing nginx-light with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq nginx-light >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null \
        || echo "ensure-proxies: apt-get could not install nginx-light;" \
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
