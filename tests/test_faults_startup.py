"""Fault rules set at startup, as users set them: ``--fault``, ``CASSETTE_SERVER_FAULTS`` and
``--faults-file`` on a real process, and their usage errors."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from server.replay.faults import parse_spec
from server.settings import Settings

from .conftest import interaction
from .test_cli import run, server

BODY = interaction()["request"]["body"]


def statuses(url: str, count: int) -> list[int]:
    with httpx.Client() as client:
        return [client.post(url + "/v1/chat/completions", content=BODY).status_code for _ in range(count)]


def test_fault_flags_and_a_faults_file_on_a_real_process(write_cassette, cassette_dir: Path, tmp_path: Path) -> None:
    write_cassette("c", interaction())
    faults_file = tmp_path / "faults.yaml"
    faults_file.write_text("- {kind: status, status: 418, times: 1}\n")
    args = (str(cassette_dir), "--fault", "rate_limit; times=1; path=/v1/chat/*", "--fault", "overloaded; times=1",
            "--faults-file", str(faults_file))
    with server(*args) as (url, _):
        assert statuses(url, 4) == [429, 503, 418, 200]
        assert [rule["id"] for rule in httpx.get(url + "/__admin/faults").json()] == ["f1", "f2", "f3"]


def test_faults_from_the_environment(write_cassette, cassette_dir: Path, tmp_path: Path) -> None:
    write_cassette("c", interaction())
    faults_file = tmp_path / "faults.json"
    faults_file.write_text('[{"kind": "server_error", "times": 1}]')
    env = {"CASSETTE_SERVER_FAULTS": "rate_limit; times=1, status; status=404; times=1",
           "CASSETTE_SERVER_FAULTS_FILE": str(faults_file)}
    with server(str(cassette_dir), env=env) as (url, _):
        assert statuses(url, 4) == [429, 404, 500, 200]


def test_bad_faults_are_usage_errors(tmp_path: Path) -> None:
    flag = run("serve", "--fault", "rate_limit; retry_after=soon")
    assert flag.returncode == 2 and "argument --fault: retry_after: must be a number" in flag.stderr
    env = run("serve", env={"CASSETTE_SERVER_FAULTS": "explode"})
    assert env.returncode == 2 and "CASSETTE_SERVER_FAULTS='explode': kind: 'explode' is not a fault kind" in env.stderr
    bad_file = tmp_path / "faults.yaml"
    bad_file.write_text("- {kind: delay}\n")
    from_file = run("serve", "--faults-file", str(bad_file))
    assert from_file.returncode == 2 and "faults.yaml, rule 1: seconds: required by kind delay" in from_file.stderr


def test_settings_resolve_and_read_the_file(tmp_path: Path) -> None:
    faults_file = tmp_path / "faults.yaml"
    faults_file.write_text("- {kind: disconnect, times: 2}\n")
    settings = Settings.resolve({"faults": [parse_spec("delay; seconds=1")], "faults_file": faults_file}, environ={})
    assert settings.startup_faults() == (parse_spec("delay; seconds=1"), parse_spec("disconnect; times=2"))
    assert Settings.resolve({}, environ={}).startup_faults() == ()
    with pytest.raises(ValueError, match="cannot read the faults file"):
        Settings.resolve({"faults_file": tmp_path / "missing.yaml"}, environ={})
