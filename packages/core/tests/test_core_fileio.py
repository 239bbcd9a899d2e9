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


def test_save_figure_writes_by_suffix_closes_and_keeps_the_old_file_on_failure(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ffnet.fileio import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    assert save_figure(fig, tmp_path / "f.png") == tmp_path / "f.png"
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)  # closed
    fig, _ = plt.subplots()
    save_figure(fig, tmp_path / "f.svg")
    assert b"<svg" in (tmp_path / "f.svg").read_bytes()[:400]

    good = (tmp_path / "f.png").read_bytes()
    fig, _ = plt.subplots()
    with pytest.raises(ValueError):
        save_figure(fig, tmp_path / "f.png", dpi=-1)  # savefig fails
    assert (tmp_path / "f.png").read_bytes() == good and not plt.fignum_exists(fig.number)
    assert sorted(os.listdir(tmp_path)) == ["f.png", "f.svg"]
