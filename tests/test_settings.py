"""Configuration: one settings object from the environment; a bad value is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal

import pytest

from hub.settings import Settings, SettingsError
from tests.conftest import ROOT


def test_defaults_match_the_contract():
    s = Settings.from_env({})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.mysql.database == "hub" and s.mysql.host == "127.0.0.1" and s.mysql.user == "root"
    assert s.redis_prefix == "hub:"
    assert s.platform_fee == Decimal("0.05")
    assert (s.tip_min, s.tip_max) == (Decimal("1.00"), Decimal("10000.00"))
    assert s.currency == "USD" and s.jwt_secret is None and s.cors_origins == ()


def test_gc_thresholds_are_three_numbers_or_pythons_own():
    assert Settings.from_env({}).gc_thresholds == (50_000, 20, 100)
    assert Settings.from_env({"HUB_GC_THRESHOLDS": "700,10,10"}).gc_thresholds == (700, 10, 10)
    assert Settings.from_env({"HUB_GC_THRESHOLDS": "python"}).gc_thresholds is None


def test_trusted_proxies_are_addresses_or_blocks():
    assert Settings.from_env({}).trusted_proxies == ()
    proxies = Settings.from_env({"HUB_TRUSTED_PROXIES": " 127.0.0.1, 10.0.0.0/8,fd00::/8, "}).trusted_proxies
    assert [str(p) for p in proxies] == ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]


def test_values_are_read_exactly():
    s = Settings.from_env(
        {
            "HUB_PLATFORM_FEE": "0.1",
            "HUB_TIP_MIN": "2.50",
            "HUB_TIP_MAX": "99.99",
            "HUB_CORS_ORIGINS": "https://a.example, https://b.example",
            "MYSQL_URL": "mysql://app:p%40ss@db.internal:3307/streams",
        }
    )
    assert s.platform_fee == Decimal("0.1") and s.tip_min == Decimal("2.50")
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert (s.mysql.user, s.mysql.password, s.mysql.port, s.mysql.database) == (
        "app",
        "p@ss",
        3307,
        "streams",
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({"MYSQL_URL": "postgres://x/y"}, "MYSQL_URL"),
        ({"MYSQL_URL": "mysql://root@localhost/"}, "MYSQL_URL"),
        ({"MYSQL_URL": "mysql://root@localhost:99999/hub"}, "MYSQL_URL"),
        ({"HUB_PLATFORM_FEE": "1.5"}, "HUB_PLATFORM_FEE"),
        ({"HUB_PLATFORM_FEE": "-0.1"}, "HUB_PLATFORM_FEE"),
        ({"HUB_PLATFORM_FEE": "abc"}, "HUB_PLATFORM_FEE"),
        ({"HUB_PLATFORM_FEE": "NaN"}, "HUB_PLATFORM_FEE"),
        ({"HUB_PLATFORM_FEE": "sNaN"}, "HUB_PLATFORM_FEE"),
        ({"HUB_PRESENCE_TTL": "nan"}, "HUB_PRESENCE_TTL"),
        ({"HUB_TIP_MIN": "0"}, "HUB_TIP_MIN"),
        ({"HUB_TIP_MIN": "50", "HUB_TIP_MAX": "10"}, "HUB_TIP_MIN"),
        ({"HUB_TIP_MIN": "0.01"}, "HUB_TIP_MIN"),
        ({"HUB_JWT_SECRET": "short"}, "HUB_JWT_SECRET"),
        ({"HUB_CORS_ORIGINS": "*"}, "HUB_CORS_ORIGINS"),
        ({"HUB_CHAT_RATE": "0"}, "HUB_CHAT_RATE"),
        ({"HUB_PRESENCE_TTL": "100"}, "HUB_PRESENCE_TTL"),
        ({"HUB_CURRENCY": "DOLLARS"}, "HUB_CURRENCY"),
        ({"HUB_FANOUT_INTERVAL": "2"}, "HUB_FANOUT_INTERVAL"),
        ({"HUB_FANOUT_INTERVAL": "-0.01"}, "HUB_FANOUT_INTERVAL"),
        ({"HUB_FANOUT_PACE_ABOVE": "-1"}, "HUB_FANOUT_PACE_ABOVE"),
        ({"HUB_GC_THRESHOLDS": "700,10"}, "HUB_GC_THRESHOLDS"),
        ({"HUB_GC_THRESHOLDS": "0,10,10"}, "HUB_GC_THRESHOLDS"),
        ({"HUB_GC_THRESHOLDS": "a,b,c"}, "HUB_GC_THRESHOLDS"),
        ({"HUB_TRUSTED_PROXIES": "10.0.0.300"}, "HUB_TRUSTED_PROXIES"),
        ({"HUB_TRUSTED_PROXIES": "127.0.0.1, proxy.internal"}, "HUB_TRUSTED_PROXIES"),
        ({"HUB_TRUSTED_PROXIES": "10.0.0.1/8"}, "HUB_TRUSTED_PROXIES"),
        ({"HUB_TRUSTED_PROXIES": "10.0.0.0/33"}, "HUB_TRUSTED_PROXIES"),
        ({"HUB_TRUSTED_PROXIES": "127.0.0.1:8080"}, "HUB_TRUSTED_PROXIES"),
        ({"HUB_TRUSTED_PROXIES": "0.0.0.0/0"}, "HUB_TRUSTED_PROXIES"),
        ({"HUB_TRUSTED_PROXIES": "::/0"}, "HUB_TRUSTED_PROXIES"),
    ],
)
def test_bad_value_names_the_variable(env, variable):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(variable)


def test_bad_value_stops_the_worker_with_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "hub", "serve", "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HUB_PLATFORM_FEE": "2"},
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "HUB_PLATFORM_FEE" in lines[0]


def test_unreachable_redis_is_named_with_its_url():
    url = "redis://127.0.0.1:1/0"
    result = subprocess.run(
        [sys.executable, "-m", "hub", "serve", "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "REDIS_URL": url},
        timeout=60,
    )
    assert result.returncode == 1
    assert url in result.stderr and "Redis" in result.stderr


def test_unreachable_mysql_is_named_with_its_url(env):
    url = "mysql://root@127.0.0.1:1/hub"
    result = subprocess.run(
        [sys.executable, "-m", "workers.flusher", "--burst"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env, "MYSQL_URL": url},
        timeout=60,
    )
    assert result.returncode == 1
    assert url in result.stderr and "MySQL" in result.stderr


def test_token_command_prints_only_a_token_that_verifies(env):
    from hub.domain.auth import Verifier

    result = subprocess.run(
        [sys.executable, "-m", "hub", "token", "alice", "--name", "Alice", "--role", "streamer"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert result.returncode == 0
    token = result.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token
    who = Verifier(Settings.from_env(env)).verify(token)
    assert (who.user_id, who.name, who.is_streamer) == ("alice", "Alice", True)


def test_migrate_is_idempotent(env):
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "hub", "migrate"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"HUB_LOG_FORMAT": "xml"}, "HUB_LOG_FORMAT"),
        ({"HUB_FLUSHER_METRICS_PORT": "70000"}, "HUB_FLUSHER_METRICS_PORT"),
        ({"HUB_ADMIN_USERNAME": "ops"}, "HUB_ADMIN_USERNAME"),
        ({"HUB_ADMIN_USERNAME": "ops", "HUB_ADMIN_PASSWORD": "short"}, "HUB_ADMIN_PASSWORD"),
        (
            {"HUB_ADMIN_USERNAME": "ops", "HUB_ADMIN_PASSWORD": "long-enough-pass", "HUB_ADMIN_MODE": "x"},
            "HUB_ADMIN_MODE",
        ),
    ],
)
def test_bad_operations_settings_name_the_variable(env, variable):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(variable)
