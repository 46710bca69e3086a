"""--watch: which file changes reload (the loader's rules), and the lifespan that runs the watcher.
The watcher against real file events is in test_admin_live.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from watchfiles import Change

import server.watch
from server import Settings
from server.service import CassetteService
from server.watch import CassetteFiles, watch_cassettes, watch_lifespan

from .conftest import interaction, on_event_loop

JSON_CASSETTE = '{"version": 2, "interactions": []}'


def test_cassette_files_follow_the_loaders_rules(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "cassettes", tmp_path / "other"
    (root / "node").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "node" / "package.json").write_text('{"name": "x", "dependencies": {}}')
    (root / "new.json").write_text(JSON_CASSETTE)
    (root / "was.json").write_text('{"emptied": true}')  # loaded before, no longer a cassette
    given = elsewhere / "given.json"
    loaded = {root / "was.json", root / "gone.json"}
    matters = CassetteFiles([root], [given], loaded=lambda: loaded)
    for change, path in [
        (Change.modified, root / "a.yaml"), (Change.deleted, root / "b.yml"), (Change.added, root / "new.json"),
        (Change.modified, root / "was.json"), (Change.deleted, root / "gone.json"), (Change.modified, given),
    ]:
        assert matters(change, str(path)), (change, path)
    for change, path in [
        (Change.modified, root / "node" / "package.json"), (Change.deleted, root / "tsconfig.json"),
        (Change.added, root / ".hidden" / "a.yaml"), (Change.added, root / ".a.yaml.tmp"), (Change.added, root / "notes.txt"),
        (Change.added, elsewhere / "a.yaml"),
    ]:
        assert not matters(change, str(path)), (change, path)


def test_the_loaded_files_are_known_resolved(write_cassette, cassette_dir: Path) -> None:
    good = write_cassette("good", interaction())
    bad = write_cassette("bad", "version: 9\ninteractions: []\n")
    (cassette_dir / "package.json").write_text("{}")
    service = CassetteService(Settings(paths=(cassette_dir / ".." / cassette_dir.name,)))
    assert service.loaded.files == {good.resolve(), bad.resolve()}


def test_the_lifespan_runs_the_watcher_only_with_watch(cassette_dir: Path) -> None:
    async def tasks_while_running(watch: bool) -> int:
        service = CassetteService(Settings(paths=(cassette_dir,), watch=watch))
        async with watch_lifespan(service)(None):
            await asyncio.sleep(0)
            running = len(asyncio.all_tasks()) - 1  # besides this one
        assert len(asyncio.all_tasks()) == 1  # the watcher stopped with the lifespan
        return running

    assert asyncio.run(tasks_while_running(False)) == 0
    assert asyncio.run(tasks_while_running(True)) == 1


def test_changes_are_sorted_out_off_the_event_loop(cassette_dir: Path, monkeypatch) -> None:
    """Telling a cassette .json from package.json reads the file: never on the event loop."""
    calls: list[bool] = []
    original = server.watch.may_be_cassette

    def spy(path: Path) -> bool:
        calls.append(on_event_loop())
        return original(path)

    monkeypatch.setattr(server.watch, "may_be_cassette", spy)
    service = CassetteService(Settings(paths=(cassette_dir,), watch=True))

    async def watch_until_loaded() -> None:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_cassettes(service, stop))
        deadline = asyncio.get_running_loop().time() + 30
        pokes = 0
        while "recorded" not in service.index.by_name:  # changed until the watcher (maybe not ready at once) sees it
            assert asyncio.get_running_loop().time() < deadline, "the watcher did not reload"
            cassette = {"version": 2, "interactions": [{"id": 0, **interaction(f'{{"poke": {pokes}}}')}]}
            (cassette_dir / "recorded.json").write_text(json.dumps(cassette))
            pokes += 1
            await asyncio.sleep(0.5)
        stop.set()
        await watcher

    asyncio.run(watch_until_loaded())
    assert calls and not any(calls)
