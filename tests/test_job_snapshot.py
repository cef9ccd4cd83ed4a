"""The working-folder snapshot for jobs where nothing is shared (jobs/snapshot.py), on real
files: what goes in (regular files only, bounded, the limit named), and what comes back
(written only where the host still has what the snapshot saw; conflicts and paths out of
the folder refused). The wiring (JobService, the runner) is proved in
tests/test_kube_snapshot.py."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from jupyter_dss_containers.jobs import snapshot


def folder_with_files(tmp_path):
    folder = tmp_path / "demo"
    (folder / "sub").mkdir(parents=True)
    (folder / "data.csv").write_text("a,b\n1,2\n")
    (folder / "sub" / "notes.txt").write_text("n")
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / "analysis-checkpoint.ipynb").write_text("{}")
    secret = tmp_path / "outside.txt"
    secret.write_text("not yours")
    (folder / "link.txt").symlink_to(secret)
    (folder / "linked").symlink_to(tmp_path)
    return folder


def test_the_snapshot_holds_the_folders_own_files_and_is_bounded(tmp_path):
    """Guards what a job takes with it: the folder's regular files at their relative paths,
    never a symlink's target (a link out of the folder reads nothing outside it) nor
    JupyterLab's checkpoints, and a
    folder over the limit refused with the limit named, as is an archive the Secret cannot
    hold."""
    folder = folder_with_files(tmp_path)
    snap = snapshot.take(str(folder))
    with tarfile.open(fileobj=io.BytesIO(snap.archive)) as tar:
        names = sorted(tar.getnames())
        assert tar.extractfile("data.csv").read() == b"a,b\n1,2\n"
    assert names == ["data.csv", "sub/notes.txt"]
    assert sorted(snap.digests) == names and snap.size == 9
    with pytest.raises(snapshot.SnapshotTooBig, match=r"more than 8 bytes.*snapshot_limit"):
        snapshot.take(str(folder), limit=8)
    (folder / "noise.bin").write_bytes(os.urandom(4096))
    with pytest.raises(snapshot.SnapshotTooBig, match="more than the 1000 bytes"):
        snapshot.take(str(folder), packed_limit=1000)


def test_files_come_back_unless_the_host_changed_them_or_they_leave_the_folder(tmp_path):
    """Guards the write-back: a new file and one the job changed are written; one changed on
    the host since the snapshot is a conflict and keeps the host's content; paths with
    ``..``, absolute ones, ones through a symlink out of the folder and onto a symlink are
    refused, and nothing outside the folder changes. Run as root (a root server's kernel),
    what it makes belongs to the folder's owner, not to root."""
    folder = folder_with_files(tmp_path)
    os.chown(folder, 1234, 100)
    snap = snapshot.take(str(folder))
    (folder / "sub" / "notes.txt").write_text("edited on the host meanwhile")
    result = snapshot.write_back(
        snap,
        {
            "out.csv": b"x\n",
            "new/deep/out.txt": b"deep",
            "data.csv": b"a,b\n3,4\n",
            "sub/notes.txt": b"the job's notes",
            "../escaped.txt": b"no",
            "/tmp/abs.txt": b"no",
            "linked/outside.txt": b"no",
            "link.txt": b"no",
            "./data.csv": b"no",
        },
    )
    assert result.written == ["data.csv", "new/deep/out.txt", "out.csv"]
    assert result.conflicts == ["sub/notes.txt"]
    assert sorted(result.refused) == sorted(
        ["../escaped.txt", "/tmp/abs.txt", "linked/outside.txt", "link.txt", "./data.csv"]
    )
    assert (folder / "data.csv").read_text() == "a,b\n3,4\n"
    assert (folder / "new" / "deep" / "out.txt").read_bytes() == b"deep"
    if os.geteuid() == 0:
        for made in ("out.csv", "new", "new/deep", "new/deep/out.txt"):
            info = (folder / made).stat()
            assert (info.st_uid, info.st_gid) == (1234, 100), made
    assert (folder / "sub" / "notes.txt").read_text() == "edited on the host meanwhile"
    assert (tmp_path / "outside.txt").read_text() == "not yours"
    assert not (tmp_path / "escaped.txt").exists()
    again = snapshot.write_back(snap, {"out.csv": b"x\n"})
    assert again.unchanged == ["out.csv"] and not again.written


def test_docker_makes_the_copys_folder_the_job_users_and_only_under_its_root():
    """Guards where the copy lands on Docker: the private files' tar holds the scratch
    folder as the job's user's (0700), so the runner can unpack at the caller's own path;
    with a read-only root (files unpacked at /tmp) a folder outside /tmp is left out (the
    runner then falls back to /tmp/.dss-work)."""
    from jupyter_dss_containers.backends.docker import private_tar

    files = {"/tmp/.dss-job/workdir.tar.gz": b"x"}
    with tarfile.open(fileobj=io.BytesIO(private_tar(files, "1234:100", "/", ("/srv/a/b",)))) as t:
        (folder,) = [m for m in t.getmembers() if m.name == "srv/a/b"]
    assert folder.isdir() and (folder.uid, folder.gid, folder.mode) == (1234, 100, 0o700)
    scratch = ("/srv/a/b", "/tmp/w")
    with tarfile.open(fileobj=io.BytesIO(private_tar(files, "1234:100", "/tmp", scratch))) as t:
        names = t.getnames()
    assert "w" in names and not any(n.startswith("srv") for n in names)
