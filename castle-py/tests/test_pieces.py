"""The pieces on their own, against fake HTTP APIs served from a Python thread of
this very process (so they answer only because the call released the GIL), and
against a real OpenBao when the test command started one."""

import json
import os
import pathlib
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

import castle
from conftest import FakeApi, Route


def test_proxmox_list_vms(fake_api: Callable[..., FakeApi], self_signed: tuple[pathlib.Path, pathlib.Path]) -> None:
    def route(method: str, path: str, body: bytes) -> tuple[int, Any]:
        assert (method, urllib.parse.urlparse(path).path) == ("GET", "/api2/json/cluster/resources")
        return 200, {
            "data": [
                {"type": "qemu", "vmid": 9000, "node": "pve", "name": "talos", "status": "stopped", "template": 1},
                {"type": "qemu", "vmid": 421, "node": "pve", "name": "cp-1", "status": "running", "tags": "castle;lab"},
                {"type": "lxc", "vmid": 300, "node": "pve", "name": "ct", "status": "running"},
            ]
        }

    api = fake_api(route, tls=self_signed)
    vms = castle.proxmox.list_vms(api.url, "castle@pve!castle", "s3cret-token", ca_file=self_signed[0])
    assert [(v["vmid"], v["name"], v["template"]) for v in vms] == [(9000, "talos", True), (421, "cp-1", False)]
    assert vms[1]["tags"] == ["castle", "lab"]
    [(_, _, headers)] = api.requests
    assert headers["authorization"] == "PVEAPIToken=castle@pve!castle=s3cret-token"


def test_proxmox_refusal_is_a_provider_error(fake_api: Callable[..., FakeApi], self_signed: tuple[pathlib.Path, pathlib.Path]) -> None:
    api = fake_api(lambda m, p, b: (401, {"data": None}), tls=self_signed)
    with pytest.raises(castle.ProviderError) as err:
        castle.proxmox.list_vms(api.url, "castle@pve!castle", "s3cret-token", ca_file=self_signed[0])
    assert "s3cret-token" not in str(err.value)


def test_proxmox_never_sends_the_token_in_clear_text() -> None:
    with pytest.raises(castle.ProviderError, match="not https"):
        castle.proxmox.list_vms("http://127.0.0.1:9", "castle@pve!castle", "s3cret-token")


def test_proxmox_checks_the_certificate(fake_api: Callable[..., FakeApi], self_signed: tuple[pathlib.Path, pathlib.Path]) -> None:
    api = fake_api(lambda m, p, b: (200, {"data": []}), tls=self_signed)
    with pytest.raises(castle.ProviderError):
        castle.proxmox.list_vms(api.url, "castle@pve!castle", "s3cret-token")
    assert castle.proxmox.list_vms(api.url, "castle@pve!castle", "s3cret-token", insecure=True) == []


def test_tailscale_mint_key(fake_api: Callable[..., FakeApi]) -> None:
    def route(method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path == "/api/v2/oauth/token":
            form = urllib.parse.parse_qs(body.decode())
            assert form["client_secret"] == ["oauth-secret"]
            return 200, {"access_token": "access", "token_type": "Bearer", "expires_in": 3600}
        assert (method, path) == ("POST", "/api/v2/tailnet/-/keys")
        request = json.loads(body)
        assert request["capabilities"]["devices"]["create"]["tags"] == ["tag:castle"]
        return 200, {"id": "k123", "key": "tskey-auth-fake-2", "expires": "2030-01-01T00:00:00Z"}

    api = fake_api(route)
    key = castle.tailscale.mint_key("client", "oauth-secret", ["tag:castle"], base_url=api.url)
    assert (key.id, key.expires) == ("k123", "2030-01-01T00:00:00Z")
    assert key.reveal() == "tskey-auth-fake-2"
    assert "fake-2" not in repr(key) and "fake-2" not in str(key)


SPEC = """
policies.castle-py-test = 'path "castle-py-kv/data/*" { capabilities = ["read"] }'

[[kv]]
path = "castle-py-kv"

[[generated]]
name = "castle-py-password"
mount = "castle-py-kv"
path = "castle-py/password"
kind = "password"
length = 24
"""


def test_vault_plan_and_apply_against_openbao() -> None:
    if "VAULT_ADDR" not in os.environ:
        # Under CI the test command starts OpenBao: its absence is a failure there.
        assert not os.environ.get("CI"), "CI is set but VAULT_ADDR is not: scripts/test.sh starts OpenBao"
        pytest.skip("no OpenBao: run scripts/test.sh (it starts one)")
    address, token = os.environ["VAULT_ADDR"], os.environ["VAULT_TOKEN"]
    castle.vault.apply(address, token, SPEC)
    assert castle.vault.plan(address, token, SPEC)["changes"] == []


def test_a_bad_vault_spec_is_a_config_error() -> None:
    with pytest.raises(castle.ConfigError, match="vault spec"):
        castle.vault.plan("http://127.0.0.1:9", "t", "kv = 3")


def test_an_unreachable_vault_is_a_provider_error() -> None:
    with pytest.raises(castle.ProviderError):
        castle.vault.plan("http://127.0.0.1:9", "t", SPEC)
