"""Tests of walloc_audio.fsutil.atomic_output: all-or-nothing outputs."""

import errno
import os
import stat

import pytest

from walloc_audio.errors import OutputError
from walloc_audio.fsutil import STDIO, atomic_output, check_output


def test_writes_through_an_unnamed_file_where_linux_has_one(tmp_path):
    out = tmp_path / "song.wav"
    with atomic_output(out) as tmp:
        if tmp.fd is None:
            pytest.skip("no O_TMPFILE (or no way to name it) on this file system")
        assert tmp.suffix == ".wav" and tmp == f"/proc/self/fd/{tmp.fd}"
        with open(tmp, "wb") as f:
            f.write(b"data")
        assert os.listdir(tmp_path) == []  # no name at all until the end: kill -9 leaves nothing
    assert out.read_bytes() == b"data"
    assert os.listdir(tmp_path) == ["song.wav"]
    with atomic_output(out, overwrite=True) as tmp:  # replacing: the old file stays until the new one is whole
        with open(tmp, "wb") as f:
            f.write(b"new")
        assert out.read_bytes() == b"data"
    assert out.read_bytes() == b"new" and os.listdir(tmp_path) == ["song.wav"]
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "b.wav") as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == ["song.wav"]


def test_writes_through_a_hidden_temporary_with_the_same_suffix(tmp_path, monkeypatch):
    from walloc_audio import fsutil

    monkeypatch.setattr(fsutil, "_unnamed_file", lambda folder: None)  # other systems: a named temporary
    out = tmp_path / "song.wav"
    with atomic_output(out) as tmp:
        name = os.path.basename(tmp)
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.suffix == ".wav" and tmp.fd is None
        assert name.startswith(".song.") and name.endswith(".part.wav")
        assert not out.exists()  # nothing visible until the end
        with open(tmp, "wb") as f:
            f.write(b"data")
    assert out.read_bytes() == b"data"
    assert os.listdir(tmp_path) == ["song.wav"]


def test_output_gets_the_usual_permissions(tmp_path):
    with atomic_output(tmp_path / "a.txt") as tmp:
        open(tmp, "w").close()
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o666 & ~mask


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "a.wav"
    out.write_bytes(b"old")
    with pytest.raises(OutputError, match=r"a.wav exists \(use -f to overwrite\)"):
        with atomic_output(out):
            pytest.fail("must not start")
    with atomic_output(out, overwrite=True) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert out.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["a.wav"]


def test_output_created_meanwhile_is_not_clobbered(tmp_path):
    out = tmp_path / "a.wav"
    with pytest.raises(OutputError, match="exists"):
        with atomic_output(out) as tmp:
            out.write_bytes(b"someone else's")  # appears after the up-front check
            with open(tmp, "wb") as f:
                f.write(b"ours")
    assert out.read_bytes() == b"someone else's"
    assert os.listdir(tmp_path) == ["a.wav"]


def test_missing_folder(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        with atomic_output(tmp_path / "no" / "a.wav"):
            pass


def test_output_is_a_directory(tmp_path):
    with pytest.raises(OutputError, match="is a directory"):
        with atomic_output(tmp_path, overwrite=True):
            pass


def test_folder_not_writable(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permission bits: pretend
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if os.fspath(p) == str(folder) else real_access(p, m))
    try:
        with pytest.raises(OutputError, match="not writable"):
            with atomic_output(folder / "a.wav"):
                pass
    finally:
        folder.chmod(0o755)
    assert os.listdir(folder) == []


@pytest.mark.parametrize("how", ["same", "relative", "symlink", "hardlink"])
def test_input_is_never_overwritten(tmp_path, monkeypatch, how):
    src = tmp_path / "in.wav"
    src.write_bytes(b"precious")
    out = {"same": src, "relative": "sub/../in.wav", "symlink": tmp_path / "ln.wav", "hardlink": tmp_path / "hl.wav"}[how]
    (tmp_path / "sub").mkdir()
    os.symlink(src, tmp_path / "ln.wav")
    os.link(src, tmp_path / "hl.wav")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="refusing to overwrite an input"):
        with atomic_output(out, overwrite=True, inputs=[str(src)]):
            pass
    assert src.read_bytes() == b"precious"


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_temporary_removed_on_exception(tmp_path, exc):
    out = tmp_path / "a.wav"
    out.write_bytes(b"old")
    with pytest.raises(type(exc)):
        with atomic_output(out, overwrite=True) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise exc
    assert out.read_bytes() == b"old"  # the previous file survives
    assert os.listdir(tmp_path) == ["a.wav"]


@pytest.mark.parametrize(
    "code, message",
    [(errno.ENOSPC, "disk full writing"), (errno.EDQUOT, "quota"), (errno.EROFS, "read-only"), (errno.EACCES, "permission")],
)
def test_os_errors_while_writing_become_output_errors(tmp_path, code, message):
    with pytest.raises(OutputError, match=f"{message}.*a.flac") as e:
        with atomic_output(tmp_path / "a.flac") as tmp:
            raise OSError(code, os.strerror(code), tmp)
    assert "\n" not in str(e.value)
    assert os.listdir(tmp_path) == []


def test_errors_about_other_files_are_left_alone(tmp_path):
    with pytest.raises(PermissionError):
        with atomic_output(tmp_path / "a.wav"):
            raise PermissionError(errno.EACCES, "Permission denied", "/some/input.wav")
    assert os.listdir(tmp_path) == []


def test_stdout_is_yielded_as_dash(tmp_path):
    with atomic_output(STDIO, inputs=["-"]) as target:
        assert target == "-"
    with pytest.raises(OutputError, match="disk full writing <stdout>"):
        with atomic_output("-"):
            raise OSError(errno.ENOSPC, "No space left on device")


def test_check_output_alone(tmp_path):
    check_output(tmp_path / "new.wav", inputs=["-", tmp_path / "other.wav"])
    (tmp_path / "new.wav").touch()
    with pytest.raises(OutputError, match="exists"):
        check_output(tmp_path / "new.wav")
