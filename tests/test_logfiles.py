"""Files framed into a log (how jobs on Kubernetes hand back their result): no engine needed."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_dss_containers.backends.logfiles import DamagedFiles, LogFiles, frame, under

RUNNER = Path(__file__).parents[1] / "jupyter_dss_containers" / "jobs" / "runner.py"
FILES = {"/tmp/.dss-job/result.pkl": os.urandom(5000), "/tmp/.dss-job/out/a b.csv": b""}


def split(log: str, token: str, seed: int) -> tuple[str, LogFiles]:
    """Feed ``log`` in random chunks, as a followed stream arrives."""
    rng, frames, shown, i = random.Random(seed), LogFiles(token), "", 0
    while i < len(log):
        n = rng.randint(1, 50)
        shown += frames.feed(log[i : i + n])
        i += n
    return shown + frames.flush(), frames


@pytest.mark.parametrize("seed", range(20))
def test_frame_is_cut_out_of_the_printed_text_at_any_chunking(seed):
    printed = "out\n<<dss-files:t0ken-but-not <<dss-files:other>>\nno newline at the end"
    shown, frames = split(printed + frame("t0ken", FILES).decode() + "later\n", "t0ken", seed)
    assert shown == printed + "later\n"
    assert frames.files() == FILES
    assert under(frames.files(), "/tmp/.dss-job/result.pkl") == {
        "result.pkl": FILES["/tmp/.dss-job/result.pkl"]
    }
    assert set(under(frames.files(), "/tmp/.dss-job/out")) == {"out/a b.csv"}


def test_cut_or_damaged_frames_are_reported_not_returned():
    block = frame("tok", FILES).decode()
    _, frames = split(block[: len(block) // 2], "tok", 0)
    with pytest.raises(DamagedFiles, match="cut short"):
        frames.files()
    lines = block.splitlines(keepends=True)
    lines.insert(3, "a stray line from a thread\n")
    _, frames = split("".join(lines), "tok", 0)
    with pytest.raises(DamagedFiles, match=r"result\.pkl in the log is damaged"):
        frames.files()
    assert split("plain output\n", "tok", 0)[1].files() == {}


def test_runner_frames_its_result_when_told_and_writes_the_files_otherwise(tmp_path):
    """The runner's own copy of the frame parses; without the token it writes the files.
    Either way the result is a JSON document that names the values, and the values file
    holds them (guards: a result that is a pickle again, or a frame that lacks a file)."""
    import json
    import pickle

    job = tmp_path / "job"
    job.mkdir()
    for token in ("abc123", None):
        (job / "runner.py").write_bytes(RUNNER.read_bytes())
        payload = {"kind": "python", "code": "print('hi')\nx = 41 + 1", "outputs": ["x"]}
        (job / "payload.pkl").write_bytes(pickle.dumps(payload))
        env = {k: v for k, v in os.environ.items() if k != "DSS_FILES_TO_LOG_FILE"}
        if token:
            (job / ".dss-files-token").write_text(token)
            env["DSS_FILES_TO_LOG_FILE"] = str(job / ".dss-files-token")
        done = subprocess.run(
            [sys.executable, str(job / "runner.py")], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        shown, frames = split(done.stdout, "abc123", 1)
        assert shown == "hi\n"
        if token:
            assert not (job / "result.json").exists() and not (job / "values.pkl").exists()
            files = {Path(k).name: v for k, v in frames.files().items()}
        else:
            assert frames.files() == {}
            files = {name: (job / name).read_bytes() for name in ("result.json", "values.pkl")}
        assert set(files) == {"result.json", "values.pkl"}
        assert json.loads(files["result.json"]) == {
            "ok": True,
            "displays": [],
            "values": ["outputs"],
        }
        assert pickle.loads(files["values.pkl"]) == {"outputs": {"x": 42}}


def test_an_oversized_frame_is_reported_not_kept():
    """A frame over the reader's limit is dropped as it arrives (guards: a job filling the
    server's memory through its log frame)."""
    frames = LogFiles("tok", limit=10_000)
    shown = frames.feed(frame("tok", {"/tmp/.dss-job/values.pkl": os.urandom(50_000)}).decode())
    assert shown == "" and frames.complete and frames.too_big
    assert frames._lines == []
    with pytest.raises(DamagedFiles, match="over 10000 bytes"):
        frames.files()
