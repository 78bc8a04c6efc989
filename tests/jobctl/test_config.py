"""kvraft-scheduler settings: flags and the same settings from YAML; flags win."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.service_config import load_config


def test_yaml_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("endpoints: a:1,b:2\nname: s1\nelection-ttl-s: 7\nelection: false\nprofile: b3\n")
    c = load_config(["--config-file", str(f), "--name", "s2"])
    assert (c.endpoints, c.name, c.election_ttl_s, c.election, c.profile) == (["a:1", "b:2"], "s2", 7, False, "b3")


@pytest.mark.parametrize("text", ["colour: red\n", "profile: nope\n", "election-ttl-s: 0\n"])
def test_bad_settings_are_refused(tmp_path: Path, text: str) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(text)
    with pytest.raises(ValueError):
        load_config(["--config-file", str(f)])
