"""Command-line flags reach the config: ICE servers, the token, engine processes."""

from __future__ import annotations

import pytest

from liveface.cli import _config, parse
from liveface.errors import ConfigError


def config(*argv):
    return _config(parse(list(argv)))


def test_stun_turn_and_token_flags(monkeypatch):
    monkeypatch.delenv("LIVEFACE_TOKEN", raising=False)
    c = config("serve", "--stun", "stun:a.example:3478", "--turn", "turns:t.example:443",
               "--turn-user", "u", "--turn-password", "p", "--token", "x" * 20,
               "--engine-processes", "3")  # fmt: skip
    assert [s.to_json() for s in c.ice_servers] == [
        {"urls": ["stun:a.example:3478"]},
        {"urls": ["turns:t.example:443"], "username": "u", "credential": "p"},
    ]
    assert c.auth_token == "x" * 20
    assert c.processes() == 3
    assert config("serve").ice_servers == ()  # no outbound requests unless configured
    assert config("serve").auth_token is None
    monkeypatch.setenv("LIVEFACE_TOKEN", "y" * 20)
    assert config("serve").auth_token == "y" * 20
    with pytest.raises(ConfigError, match="username"):
        config("serve", "--turn", "turn:t.example:3478")


def test_engine_processes_default_to_cores_for_the_cpu_engine_and_none_for_diffusion():
    assert config("serve").processes() >= 1
    assert config("serve", "--engine", "diffusion").processes() == 0
    with pytest.raises(ConfigError, match="engine_processes"):
        config("serve", "--engine-processes", "-1")
