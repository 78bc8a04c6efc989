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


def test_plugin_args_from_yaml_or_flags_change_the_profile() -> None:
    from scheduler.service_config import core_profile

    def elastic_args(c: object) -> dict[str, object]:
        (spec,) = [p for p in core_profile(c).plugins if p.name == "elastic"]  # type: ignore[arg-type]
        return dict(spec.args)

    c = load_config(["--plugin-arg", "elastic.grow_after_s=120", "--plugin-arg", "elastic.hold_s=30"])
    assert c.plugin_args == ["elastic.grow_after_s=120", "elastic.hold_s=30"]
    assert elastic_args(c) == {"grow_after_s": 120, "hold_s": 30}
    assert elastic_args(load_config([])) == {"grow_after_s": 600.0, "hold_s": 300.0}


def test_plugin_args_mapping_in_yaml(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("plugin-args:\n  elastic: {grow_after_s: 60}\n  preemption: {hold_s: 120}\n")
    c = load_config(["--config-file", str(f)])
    assert sorted(c.plugin_args) == ["elastic.grow_after_s=60", "preemption.hold_s=120"]


@pytest.mark.parametrize(("arg", "says"), [
    ("elastic.grow_after_s=-1", "grow_after_s"),  # the plugin refuses the value
    ("elastic.colour=1", "colour"),  # no such argument
    ("nosuch.x=1", "no plugin 'nosuch'"),
    ("elastic.grow_after_s", "plugin.arg=VALUE"),
    ("elastic.grow_after_s=ten", "not JSON"),
])
def test_bad_plugin_args_are_refused_at_start(arg: str, says: str) -> None:
    with pytest.raises(ValueError) as exc:
        load_config(["--plugin-arg", arg])
    assert str(exc.value).startswith("--plugin-arg: ") and says in str(exc.value), exc.value
