"""``load_config`` keeps what a file parsed to while the file is unchanged (config.py,
filecache.py): the same object back, every edit seen at once, a broken edit reported the
same way each time, and the launcher still asked first when one is configured."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from servers import free_port

from jupyter_dss_containers import filecache
from jupyter_dss_containers.config import ConfigError, load_config

ONE = "execution_configs:\n  aaa: {backend: docker, image: default}\n"
TWO = "execution_configs:\n  bbb: {backend: docker, image: default}\n"  # same size as ONE
BROKEN = "execution_configs:\n  aaa: {backend: dockr, image: default}\n"


def settle(path: Path) -> None:
    """Date the file back a minute, as a file not edited lately is."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 60 * 10**9))


@pytest.fixture
def site(tmp_path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(ONE)
    return path


def test_an_unchanged_file_gives_the_same_object(site):
    """Guards the cache itself: a re-read (or a new object) per call would fail here, both
    while the file is fresh (confirmed by its text) and once it has settled."""
    first = load_config(site)
    assert load_config(site) is first
    settle(site)
    settled = load_config(site)
    assert load_config(site) is settled and load_config(str(site)) is settled
    assert list(settled.execution_configs) == ["aaa"]


def test_the_embedded_default_is_built_once(monkeypatch, tmp_path):
    """Guards the embedded default's cache (no file anywhere on the search path)."""
    monkeypatch.delenv("DSS_CONTAINERS_CONFIG", raising=False)
    monkeypatch.delenv("DSS_CONTAINERS_LAUNCHER_URL", raising=False)
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(tmp_path / "empty"))
    first = load_config(None)
    assert first.source == "<embedded default>"
    assert load_config(None) is first


@pytest.mark.parametrize("settled", [False, True], ids=["fresh", "settled"])
def test_an_edit_is_seen_at_once(site, settled):
    """Guards the stamp: an edit of the same size (and one of another size) must give the new
    configs on the very next call, a file edited long ago or a moment ago alike."""
    load_config(site)
    if settled:
        settle(site)
        load_config(site)
    site.write_text(TWO)
    assert list(load_config(site).execution_configs) == ["bbb"]
    site.write_text(TWO + "  ccc: {backend: docker, image: default}\n")
    assert list(load_config(site).execution_configs) == ["bbb", "ccc"]


def test_an_edit_within_one_time_stamp_is_seen(site, monkeypatch):
    """Guards the text check of a fresh entry: on a file system whose clock ticks coarsely,
    two same-size edits share a stamp; the second must not be served the first's configs."""
    now = filecache.time.time_ns()
    frozen = filecache.Stamp(str(site), 1, 1, len(ONE), now, now)
    monkeypatch.setattr(filecache, "stamp_of", lambda path: frozen)
    assert list(load_config(site).execution_configs) == ["aaa"]
    site.write_text(TWO)
    assert list(load_config(site).execution_configs) == ["bbb"]


def test_a_replaced_file_or_a_swapped_link_is_seen(tmp_path):
    """Guards the inode and resolved path in the stamp: an editor's atomic replace and a
    ConfigMap's symlink swap keep size and (here, forced) modification time."""
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(ONE)
    b.write_text(TWO)
    settle(a)
    st = a.stat()
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    link = tmp_path / "site.yaml"
    link.symlink_to(a)
    assert list(load_config(link).execution_configs) == ["aaa"]
    link.unlink()
    link.symlink_to(b)
    assert list(load_config(link).execution_configs) == ["bbb"]
    assert list(load_config(a).execution_configs) == ["aaa"]
    os.replace(b, a)
    assert list(load_config(a).execution_configs) == ["bbb"]


def test_a_broken_edit_gives_the_same_one_line_error_each_time(site):
    """Guards the error path of the cache: a kept error must still be raised (never the last
    good file), with the same one line, and a fix must be seen at once."""
    load_config(site)
    site.write_text(BROKEN)
    messages = []
    for _ in range(3):
        with pytest.raises(ConfigError) as caught:
            load_config(site)
        messages.append(str(caught.value))
    assert messages[0] == messages[1] == messages[2]
    assert messages[0].count("\n") == 0
    assert messages[0].startswith(f"{site}: execution_configs.aaa.backend: ")
    site.write_text(ONE)
    assert list(load_config(site).execution_configs) == ["aaa"]


def test_a_removed_file_is_named_and_its_return_seen(site):
    """Guards forgetting a file that is gone: the cached configs must not outlive it."""
    load_config(site)
    site.unlink()
    with pytest.raises(ConfigError, match="file not found"):
        load_config(site)
    site.write_text(TWO)
    assert list(load_config(site).execution_configs) == ["bbb"]


def test_threads_loading_at_once_share_one_object(site):
    """Guards the cache's lock: threads that all miss must still end with one object."""
    site.write_text(TWO)
    got, start = [], threading.Barrier(8)

    def load() -> None:
        start.wait()
        got.append(load_config(site))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(c) for c in got} | {id(load_config(site))}) == 1


def test_a_configured_launcher_is_asked_before_any_cached_file(site, monkeypatch):
    """Guards the launcher hook's order: a server that has a launcher must never be served a
    config file's (cached) configs instead, and an explicit path still reads the file."""
    monkeypatch.setenv("DSS_CONTAINERS_CONFIG", str(site))
    assert list(load_config(None).execution_configs) == ["aaa"]  # cached now
    monkeypatch.setenv("DSS_CONTAINERS_LAUNCHER_URL", f"http://127.0.0.1:{free_port()}/")
    monkeypatch.setenv("DSS_CONTAINERS_LAUNCHER_SECRET", "not-a-real-secret")
    with pytest.raises(ConfigError, match=r"^launcher http://127\.0\.0\.1:"):
        load_config(None)
    assert list(load_config(site).execution_configs) == ["aaa"]
