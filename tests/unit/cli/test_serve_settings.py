"""`serve` flags that become ServerSettings: keys from a file and the environment, allowed hosts."""
from __future__ import annotations

import pytest

from lmdeploy_sdk.cli.main import build_parser
from lmdeploy_sdk.cli.serve import API_KEYS_ENV, _listen_settings, api_keys
from lmdeploy_sdk.server.allowed_hosts import LOOPBACK_HOSTS, default_allowed_hosts, host_name


def parse(*argv: str):
    return build_parser().parse_args(["serve", "api_server", *argv])


def test_keys_come_from_the_flag_a_file_and_the_environment(tmp_path, monkeypatch):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# team keys\nfile-key-1\n\n  file-key-2  \nflag-key\n", encoding="utf-8")
    monkeypatch.setenv(API_KEYS_ENV, "env-key-1, env-key-2 env-key-3")
    args = parse("--api-keys", "flag-key", "--api-keys-file", str(keys_file))
    assert api_keys(args) == ("flag-key", "file-key-1", "file-key-2", "env-key-1", "env-key-2", "env-key-3")


def test_no_keys_anywhere_means_a_keyless_server(monkeypatch):
    monkeypatch.delenv(API_KEYS_ENV, raising=False)
    assert api_keys(parse()) == ()


def test_a_missing_keys_file_is_named(monkeypatch):
    monkeypatch.delenv(API_KEYS_ENV, raising=False)
    with pytest.raises(ValueError, match="--api-keys-file '/no/such/file'"):
        api_keys(parse("--api-keys-file", "/no/such/file"))


@pytest.mark.parametrize("server_name, hosts", [
    ("127.0.0.1", LOOPBACK_HOSTS), ("localhost", LOOPBACK_HOSTS), ("::1", LOOPBACK_HOSTS),
    ("127.0.0.2", LOOPBACK_HOSTS), ("0.0.0.0", ()), ("::", ()), ("10.1.2.3", ()), ("myhost", ()),
])
def test_default_allowed_hosts_follow_the_listen_address(server_name, hosts):
    assert default_allowed_hosts(server_name) == hosts
    assert _listen_settings(parse("--server-name", server_name))["allowed_hosts"] == hosts


def test_allowed_hosts_flag_wins():
    assert _listen_settings(parse("--allowed-hosts", "api.example.com", "*.internal"))["allowed_hosts"] == \
        ("api.example.com", "*.internal")


@pytest.mark.parametrize("header, name", [
    ("example.com", "example.com"), ("example.com:8000", "example.com"), ("[::1]:8000", "::1"), ("[::1]", "::1"),
    ("::1", "::1"), ("127.0.0.1:23333", "127.0.0.1"),
])
def test_host_name_drops_the_port(header, name):
    assert host_name(header) == name
