"""Which Host headers `gputui serve` answers to: its own names only, so a rebinding DNS name is refused,
while a proxy's or tunnel's --public-url and loopback's usual names still work."""

from __future__ import annotations

from gputui.tui.serve import allowed_hosts, serve_token


def test_loopback_answers_to_its_names_on_its_port_only():
    hosts = allowed_hosts("127.0.0.1", 8000, "http://127.0.0.1:8000")
    assert {"127.0.0.1:8000", "localhost:8000", "[::1]:8000"} <= hosts
    assert "evil.example:8000" not in hosts and "127.0.0.1:8001" not in hosts and "127.0.0.1" not in hosts


def test_public_url_behind_a_tls_proxy_and_ipv6():
    hosts = allowed_hosts("::1", 8000, "https://gpus.example.org/gputui")
    assert {"[::1]:8000", "gpus.example.org", "gpus.example.org:443"} <= hosts
    assert "gpus.example.org:8000" not in hosts


def test_chosen_token_must_look_like_a_secret(monkeypatch):
    monkeypatch.setenv("GPUTUI_SERVE_TOKEN", "a" * 15)
    assert serve_token() is None
    monkeypatch.setenv("GPUTUI_SERVE_TOKEN", "has space in it 0123456789")
    assert serve_token() is None
    monkeypatch.setenv("GPUTUI_SERVE_TOKEN", "Good_token-0123456789")
    assert serve_token() == "Good_token-0123456789"
    monkeypatch.delenv("GPUTUI_SERVE_TOKEN", raising=False)  # serve_token took it out of the environment
    assert serve_token() != serve_token()
