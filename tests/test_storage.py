"""Cassette names → files under one directory, never outside; whole-file writes."""

from __future__ import annotations

import errno
import stat
from pathlib import Path

import pytest

from server.errors import BadRequest, Conflict, NotWritable
from server.storage import cassette_file, name_problem, write_whole

YAML = b"version: 2\ninteractions: []\n"
JSON = b'\n  {"version": 2, "interactions": []}'


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "a\\..\\x", "", "a//b", "./a", ".git/x", "a.yaml", "a\nb",
                                  "a\x7fb", "b" * 201, "a/" + "é" * 101])
def test_unsafe_or_unloadable_names(name: str, tmp_path: Path) -> None:
    assert name_problem(name) is not None
    with pytest.raises(BadRequest, match="use a relative name"):
        cassette_file(tmp_path, name, YAML)


@pytest.mark.parametrize("name", ["weather", "openai/chat-1", "team/a.b/c_d", "日本/テスト", "b" * 200, "é" * 100])
def test_good_names(name: str, tmp_path: Path) -> None:
    assert cassette_file(tmp_path, name, YAML) == tmp_path / f"{name}.yaml"


def test_a_longest_name_part_can_be_written(tmp_path: Path) -> None:
    target = cassette_file(tmp_path, "b" * 200, YAML)
    write_whole(target, YAML)  # its temporary file's name fits too
    assert target.read_bytes() == YAML


def test_a_path_too_long_for_the_file_system_is_a_bad_name(tmp_path: Path) -> None:
    name = "/".join(["b" * 200] * 25)  # every part fits; the whole path is longer than PATH_MAX
    with pytest.raises(BadRequest, match="too long for the file system.*use a relative name"):
        cassette_file(tmp_path, name, YAML)


def test_a_file_system_that_refuses_to_look_is_not_writable(tmp_path: Path, monkeypatch) -> None:
    def refuse(self: Path) -> bool:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_file", refuse)
    with pytest.raises(NotWritable, match=f"cannot write cassette file {tmp_path / 'x.yaml'}: Permission denied"):
        cassette_file(tmp_path, "x", YAML)


def test_an_existing_yml_file_is_reused(tmp_path: Path) -> None:
    (tmp_path / "old.yml").write_text("x")
    assert cassette_file(tmp_path, "old", YAML) == tmp_path / "old.yml"


def test_an_existing_json_cassette_is_reused_only_for_a_json_body(tmp_path: Path) -> None:
    (tmp_path / "j.json").write_bytes(JSON)
    assert cassette_file(tmp_path, "j", JSON) == tmp_path / "j.json"
    for body in (YAML, b'{version: 2, interactions: []}'):  # YAML, even as a flow mapping
        with pytest.raises(Conflict, match=r"stored as JSON in .*j\.json and this body is not JSON"):
            cassette_file(tmp_path, "j", body)


def test_a_json_file_that_is_no_cassette_is_passed_over(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text('{"name": "x"}')
    assert cassette_file(tmp_path, "package", YAML) == tmp_path / "package.yaml"
    assert cassette_file(tmp_path, "package", JSON) == tmp_path / "package.yaml"


def test_symlinks_out_of_the_directory_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "out").symlink_to(outside, target_is_directory=True)
    with pytest.raises(BadRequest, match="symbolic link"):
        cassette_file(root, "out/x", YAML)


def test_write_whole_creates_parents_and_keeps_permissions(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.yaml"
    write_whole(target, b"one")
    assert target.read_bytes() == b"one" and stat.S_IMODE(target.stat().st_mode) == 0o644
    target.chmod(0o600)
    write_whole(target, b"two")
    assert target.read_bytes() == b"two" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["b.yaml"]


def test_write_whole_turns_os_errors_into_not_writable(tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("a file where a folder would go")
    with pytest.raises(NotWritable) as caught:
        write_whole(tmp_path / "notes" / "x.yaml", b"one")
    message = caught.value.message
    assert message.startswith(f"cannot write cassette file {tmp_path / 'notes' / 'x.yaml'}: ")
    assert str(tmp_path / "notes") in message and "something other than a file is in the way" in message
    assert caught.value.status_code == 409 and caught.value.code == "not_writable"
