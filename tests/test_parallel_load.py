"""Loading a large corpus in several processes: the same cassettes and the same errors (file and
line) as loading it in one, and it really is other processes that parse.

The child runs in its own interpreter: the test process has threads (servers of other tests),
and a process with threads never forks its loaders."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

from server.loader import load_paths

from .conftest import ROOT, go_vcr, interaction

_CHILD = """
import dataclasses, json, os, sys
from pathlib import Path
from server import parallel_load
from server.loader import load_file, load_paths

def load_one(name, file):  # the cassette, stamped with the process that parsed it
    return dataclasses.replace(load_file(Path(file), name=name), notes=(str(os.getpid()),))

directory = Path(sys.argv[1])
jobs = [(path.stem, str(path)) for path in sorted(directory.glob("*.yaml"))]
outcomes = parallel_load.load_files(jobs, load_one, workers=2)
parallel_load.PARALLEL_FROM_BYTES = 0  # load_paths decides for itself, now for any size
result = load_paths([directory])
print(json.dumps({
    "parent": os.getpid(),
    "parsed_by": sorted({o.notes[0] for o in outcomes.values() if not isinstance(o, tuple)}),
    "errors": [str(e) for o in outcomes.values() if isinstance(o, tuple) for e in o],
    "cassettes": [[c.name, [i.request.body.decode() for i in c.interactions]] for c in result.cassettes],
    "failures": [str(e) for e in result.errors],
}))
"""


def _load_in_a_child(directory: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(directory)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=True)
    return json.loads(done.stdout)


def _corpus(directory: Path) -> None:
    for number in range(12):
        bodies = [f'{{"model":"m","messages":[{{"role":"user","content":"q{number}-{i}"}}]}}' for i in range(3)]
        (directory / f"c{number:02}.yaml").write_text(go_vcr(*(interaction(body) for body in bodies)))
    (directory / "broken.yaml").write_text("version: 2\ninteractions:\n- id: 0\n  request: {method: POST\n")
    bad = go_vcr(interaction(), interaction()).replace("method: POST", "method: 7", 1).replace("code: 200", "code: x")
    (directory / "two-problems.yaml").write_text(bad)
    (directory / "packed.yaml.gz").write_bytes(gzip.compress(go_vcr(interaction('{"packed":1}')).encode()))
    (directory / "c00.yml").write_text(go_vcr(interaction()))  # the name c00 again: refused


def test_workers_parse_and_the_result_is_what_one_process_loads(cassette_dir: Path) -> None:
    _corpus(cassette_dir)
    child = _load_in_a_child(cassette_dir)
    assert child["parsed_by"] and str(child["parent"]) not in child["parsed_by"]

    alone = load_paths([cassette_dir])  # this process has threads: loads in-process
    assert child["cassettes"] == [[c.name, [i.request.body.decode() for i in c.interactions]] for c in alone.cassettes]
    assert child["failures"] == [str(error) for error in alone.errors]
    assert len(alone.cassettes) == 13 and len(alone.errors) == 4  # 12 + packed; broken, two problems, c00 twice
    broken = [error for error in child["errors"] if "broken.yaml" in error]
    assert len(broken) == 1 and "broken.yaml:5:" in broken[0]  # the file and line cross the process boundary
    assert sum("two-problems.yaml:" in error for error in child["errors"]) == 2
