"""``kvraft.urls.parse_peer_urls``: the peer URLs etcdctl and etcd take, with etcdctl's
messages (captured from etcdctl 3.4 ``member update 1 --peer-urls=...``)."""

from __future__ import annotations

import pytest

from kvraft.urls import parse_peer_urls


@pytest.mark.parametrize(("urls", "want"), [
    (["http://a:1"], ["http://a:1"]),
    ([" http://b:2", "http://a:1 "], ["http://a:1", "http://b:2"]),
    (["HTTP://a:1"], ["http://a:1"]),
    (["https://[::1]:5"], ["https://[::1]:5"]),
    (["unix://a:1", "unixs://b:0"], ["unix://a:1", "unixs://b:0"]),
    (["http://a:"], ["http://a:"]),
    (["http://a:1?q"], ["http://a:1?q"]),
])
def test_taken(urls: list[str], want: list[str]) -> None:
    assert parse_peer_urls(urls) == want


@pytest.mark.parametrize(("urls", "message"), [
    (["foo"], "URL scheme must be http, https, unix, or unixs: foo"),
    (["http://a:1", ""], "URL scheme must be http, https, unix, or unixs: "),
    (["ftp://a:1"], "URL scheme must be http, https, unix, or unixs: ftp://a:1"),
    (["http://a"], 'URL address does not have the form "host:port": http://a'),
    (["http://[::1]"], 'URL address does not have the form "host:port": http://[::1]'),
    (["http://a:1:2"], 'URL address does not have the form "host:port": http://a:1:2'),
    (["http:a:1"], 'URL address does not have the form "host:port": http:a:1'),
    (["http://a:1/x"], "URL must not contain a path: http://a:1/x"),
    (["http://a:1/"], "URL must not contain a path: http://a:1/"),
    (["http://a:xx"], 'parse "http://a:xx": invalid port ":xx" after host'),
    (["http://[::1"], "parse \"http://[::1\": missing ']' in host"),
    ([], "no valid URLs given"),
])
def test_refused(urls: list[str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_peer_urls(urls)
    assert str(info.value) == message
