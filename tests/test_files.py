"""Atomic writes (`sim.files`): the permissions `open(path, "w")` gives, a replace by rename, no
temporary left behind; and every writer of the packages goes through them."""

import contextlib
import os
import re
import stat
import sys
from pathlib import Path

import pytest

from sim.files import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)

ROOT = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _plain_open_mode(path) -> int:
    """The permissions `open(path, "w")` leaves on `path` (written, then read back)."""
    with open(path, "w") as f:
        f.write("x")
    return _mode(path)


@posix_only
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=oct)
@pytest.mark.parametrize("writer", [atomic_write_json, atomic_write_text, atomic_write_bytes], ids=lambda w: w.__name__)
def test_new_file_gets_the_mode_of_a_plain_open(tmp_path, mask, writer):
    value = {atomic_write_json: {"a": 1}, atomic_write_text: "text", atomic_write_bytes: b"bytes"}[writer]
    with umask(mask):
        writer(tmp_path / "new", value)
        expected = _plain_open_mode(tmp_path / "plain")
    assert expected == 0o666 & ~mask
    assert _mode(tmp_path / "new") == expected


@posix_only
@pytest.mark.parametrize("existing_mode", [0o640, 0o604, 0o600], ids=oct)
def test_existing_file_keeps_its_mode_like_a_plain_open(tmp_path, existing_mode):
    ours, plain = tmp_path / "ours.json", tmp_path / "plain.json"
    for path in (ours, plain):
        path.write_text("old")
        os.chmod(path, existing_mode)
    with umask(0o022):
        atomic_write_json(ours, [1, 2])
        assert _plain_open_mode(plain) == existing_mode
    assert _mode(ours) == existing_mode
    assert ours.read_text() == "[\n  1,\n  2\n]\n"


def test_existing_content_is_replaced_by_a_rename(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"run": 1})
    before = os.stat(path).st_ino
    seen = []

    def write(f):
        seen.append(path.read_text())  # readers see the old file while the new one is written
        f.write(b'{"run": 2}\n')

    atomic_write(path, write)
    assert seen == ['{\n  "run": 1\n}\n']
    assert path.read_text() == '{"run": 2}\n'
    assert os.stat(path).st_ino != before  # a new file renamed onto the name, not rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "fig.png"
    atomic_write_bytes(path, b"old")

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_text_is_utf8_and_the_folder_is_created(tmp_path):
    path = tmp_path / "a" / "b" / "notes.txt"
    atomic_write_text(path, "k* = 6, ω\n")
    assert path.read_bytes() == "k* = 6, ω\n".encode()


# Writing a file outside sim/files.py: the calls that create, fill or rename one.
_WRITER = re.compile(
    r"mkstemp|NamedTemporaryFile|os\.replace|os\.rename|\.write_text\(|\.write_bytes\(|np\.save|"
    r"""open\([^)]*["'][wax]b?\+?["']"""
)
#: theory/ may not import sim (imports point one way): its compiled kernel is renamed into place by
#: theory/native.py itself.
_OWN_ATOMIC_WRITE = {"theory/native.py", "sim/files.py"}


def test_every_writer_of_the_packages_goes_through_sim_files():
    sources = [p for folder in ("theory", "sim", "passk", "benchmarks") for p in (ROOT / folder).rglob("*.py")]
    sources.append(ROOT / "tests" / "notebook_runner.py")
    offenders = []
    for path in sources:
        name = path.relative_to(ROOT).as_posix()
        if name in _OWN_ATOMIC_WRITE:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if _WRITER.search(code) and "atomic_write" not in code:  # e.g. np.savez into atomic_write's file
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, "write through sim.files instead:\n" + "\n".join(offenders)
