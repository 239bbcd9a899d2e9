"""ffnet.fileio: atomic output keeps the old file on failure, leaves no temp files, normal permissions."""

import os

import pytest
from ffnet.fileio import atomic_output, atomic_write_bytes, default_file_mode


def test_atomic_write_replaces_with_normal_mode(tmp_path):
    p = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(p, b"one")
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two"
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask == default_file_mode()  # not mkstemp's 0600
    assert os.listdir(p.parent) == ["a.bin"]


def test_failure_keeps_the_old_file_and_cleans_up(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(b"precious")
    with pytest.raises(RuntimeError), atomic_output(p, suffix=".png") as tmp:
        assert tmp.endswith(".png") and os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("writer failed")
    assert p.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["a.png"]
