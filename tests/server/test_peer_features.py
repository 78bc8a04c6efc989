"""``PeerFeatures``: what each peer last announced, remembered across restarts; a handshake
since the start wins over the file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from kvraft.server.peer_features import FILE_NAME, PeerFeatures

NEW = frozenset({"forward-term", "request-ids"})
OLD = frozenset({"forward-term"})


def test_what_a_peer_announced_is_remembered_after_a_restart(tmp_path: Path) -> None:
    features = PeerFeatures(tmp_path)
    assert features.of(0xA) == frozenset()  # never heard
    features.heard(0xA, NEW)
    features.heard(0xB, OLD)
    assert json.loads((tmp_path / FILE_NAME).read_text()) == {"a": sorted(NEW), "b": sorted(OLD)}
    again = PeerFeatures(tmp_path)
    assert again.of(0xA) == NEW and again.of(0xB) == OLD


def test_a_handshake_since_the_start_wins_and_a_downgrade_is_written(tmp_path: Path) -> None:
    PeerFeatures(tmp_path).heard(0xA, NEW)
    restarted = PeerFeatures(tmp_path)
    restarted.heard(0xA, OLD)  # came back as an older version
    assert restarted.of(0xA) == OLD
    assert PeerFeatures(tmp_path).of(0xA) == OLD
    restarted.heard(0xA, frozenset())  # a version before the features: none announced
    assert restarted.of(0xA) == frozenset() and PeerFeatures(tmp_path).of(0xA) == frozenset()


def test_unchanged_features_are_not_written_again(tmp_path: Path) -> None:
    features = PeerFeatures(tmp_path)
    features.heard(0xA, NEW)
    path = tmp_path / FILE_NAME
    path.write_text('{ "a": ["forward-term", "request-ids"] }\n')  # (the same, spelt otherwise)
    features.heard(0xA, NEW)  # (every reconnection announces them again)
    assert path.read_text() == '{ "a": ["forward-term", "request-ids"] }\n'


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"zz": ["x"]}', '{"a": 3}'])
def test_an_unreadable_file_is_ignored_and_learnt_again(tmp_path: Path, text: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / FILE_NAME).write_text(text)
    with caplog.at_level(logging.WARNING, logger="kvraft.peer_features"):
        features = PeerFeatures(tmp_path)
    assert features.of(0xA) == frozenset() and "learnt again from the handshakes" in caplog.text
    features.heard(0xA, NEW)
    assert PeerFeatures(tmp_path).of(0xA) == NEW
