"""The phase-history model (:mod:`jupyter_dss_containers.phases`) and the reading of the
kubelet's pull Events: pure, with an injected clock (no sleeping, no timed assertions)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from jupyter_dss_containers import phases
from jupyter_dss_containers.backends.kubernetes.pulls import pull_progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def history(clock: Clock) -> phases.PhaseHistory:
    return phases.PhaseHistory(clock=clock, wall=lambda: 1_700_000_000.0)


def test_each_phase_keeps_the_time_spent_in_it():
    """Guards: durations measured from the wrong end (a phase's time credited to the next
    one), a repeated report opening a second step, the final phase carrying a duration."""
    clock = Clock()
    h = history(clock)
    h.enter(phases.QUEUED, "waiting for a slot")
    clock.now += 0.5
    h.enter(phases.PULLING, 'Pulling image "x"')
    clock.now += 3.0
    h.note('pulled image "x" (1.0 MiB) in 3s')
    h.enter(phases.PULLING, "")  # a repeated report keeps the message
    h.enter(phases.STARTING, "creating")
    clock.now += 0.25
    h.enter(phases.BOOTING)
    clock.now += 1.0
    rows = h.rows()
    assert [r["phase"] for r in rows] == ["queued", "pulling", "starting", "booting"]
    assert [r["seconds"] for r in rows] == [0.5, 3.0, 0.25, 1.0]
    assert rows[1]["message"] == 'pulled image "x" (1.0 MiB) in 3s'
    assert [r["current"] for r in rows] == [False, False, False, True]
    h.enter(phases.READY, "the kernel answered")
    clock.now += 10  # a finished start stays as it was
    h.enter(phases.FAILED, "late report")
    assert h.done and h.current.phase == "ready"
    assert h.summary() == (
        "queued 0.5 s, pulling image 3.0 s, starting container 0.2 s, kernel booting 1.0 s, ready"
    )
    assert h.total() == pytest.approx(4.75)
    assert h.rows()[-1]["seconds"] == 0 and h.rows()[0]["started"].startswith("2023-11-14")


def test_unknown_phase_is_refused():
    """Guards: a typo'd phase name silently shown to users."""
    with pytest.raises(ValueError):
        history(Clock()).enter("pulled")


def test_a_failed_start_quotes_its_phases_once():
    """Guards: a failed start's error without its history, the history quoted after the log
    tail (it belongs on the first line), or quoted twice."""
    board = phases.PhaseBoard()
    board.begin("k", phases.QUEUED, "")
    board.enter("k", phases.SCHEDULING, "waiting for the scheduler")
    message = board.failed("k", "pod x: ErrImagePull: nope; last log lines:\nline")
    assert message.startswith("pod x: ErrImagePull: nope; last log lines:; start phases: queued")
    assert message.endswith("scheduling 0.0 s, failed\nline")
    assert board.get("k").current.phase == "failed"
    assert board.failed("k", "again") == "again"  # already failed: unchanged
    assert board.failed("unknown", "x") == "x"
    board.enter("unknown", phases.READY)  # a start this process does not follow: nothing
    assert board.get("unknown") is None


def test_board_fields_and_bound():
    """Guards: the REST fields' names, a board growing without bound, a restart's history
    mixed with the previous start's."""
    board = phases.PhaseBoard(keep=2)
    assert board.fields("a") == {"phase": None, "phase_message": None, "phases": []}
    board.begin("a", phases.QUEUED, "one")
    board.enter("a", phases.READY, "ok")
    board.begin("a", phases.QUEUED, "restart")  # a restart: a new history
    assert [r["phase"] for r in board.fields("a")["phases"]] == ["queued"]
    board.begin("b")
    board.begin("c")
    assert board.get("a") is None and board.get("c") is not None
    assert board.fields("c")["phase"] == "queued"


def test_phase_names_have_one_home():
    """Guards: a phase without words for the sidebar and ``%%container``."""
    assert set(phases.ORDER) == set(phases.LABELS)


def event(rv: int, reason: str, message: str, uid: str = "u1") -> SimpleNamespace:
    return SimpleNamespace(
        reason=reason,
        message=message,
        source=SimpleNamespace(component="kubelet"),
        reporting_component="kubelet",
        involved_object=SimpleNamespace(uid=uid),
        metadata=SimpleNamespace(resource_version=str(rv)),
    )


def test_pull_events_in_the_phase_words():
    """Guards: the kubelet's Pulled size lost, an earlier pod's pull taken for this one's,
    an older event winning over a newer one."""
    pulling = event(5, "Pulling", 'Pulling image "reg/img:1"')
    pulled = event(
        7,
        "Pulled",
        'Successfully pulled image "reg/img:1" in 3.277s (3.277s including waiting). '
        "Image size: 70984068 bytes.",
    )
    other = event(9, "Pulling", 'Pulling image "old"', uid="u0")
    assert pull_progress([], "u1") is None
    assert pull_progress([pulling, other], "u1") == ("pulling", 'Pulling image "reg/img:1"')
    assert pull_progress([pulled, pulling, other], "u1") == (
        "pulled",
        'pulled image "reg/img:1" (67.7 MiB) in 3.277s',
    )
    present = event(3, "Pulled", 'Container image "x" already present on machine')
    assert pull_progress([present], "u1") == (
        "pulled",
        'Container image "x" already present on machine',
    )


def test_phase_echo_tells_a_slow_start_only(monkeypatch):
    """Guards: every quick cell cluttered with phase lines, a slow start's phases not
    printed, a phase printed twice, the ready line without its timings."""
    import io

    from jupyter_dss_containers.jobs.phaseecho import PhaseEcho

    clock = Clock()
    board = phases.PhaseBoard()
    monkeypatch.setattr(phases, "BOARD", board)
    quick = history(clock)
    board._histories["quick"] = quick
    quick.enter(phases.QUEUED, "")
    quick.enter(phases.READY, "ok")
    out = io.StringIO()
    echo = PhaseEcho("quick", out)
    echo()
    echo()
    assert out.getvalue() == ""

    slow = history(clock)
    board._histories["slow"] = slow
    slow.enter(phases.QUEUED, "waiting for a slot")
    echo = PhaseEcho("slow", out)
    echo()
    assert out.getvalue() == ""  # not slow yet
    clock.now += 0.5
    slow.enter(phases.PULLING, 'Pulling image "x"')
    clock.now += 2.0
    echo()
    echo()
    slow.enter(phases.STARTING, "creating")
    clock.now += 0.5
    slow.enter(phases.READY, "the job runs")
    echo()
    assert out.getvalue().splitlines() == [
        "dss-containers: queued: waiting for a slot",
        'dss-containers: pulling image: Pulling image "x"',
        "dss-containers: starting container: creating",
        "dss-containers: ready after 3.0 s (queued 0.5 s, pulling image 2.0 s, "
        "starting container 0.5 s, ready)",
    ]


def test_starts_of_an_owner_only_while_they_go_on():
    """Guards: a kernel still starting (not listed by the kernel manager yet) shown to
    another user, or shown after its start ended."""
    board = phases.PhaseBoard()
    board.begin("k1")
    board.claim("k1", "alice", name="dss-k8s", execution_config="k8s")
    board.begin("k2")
    board.claim("k2", "bob")
    board.begin("j1")  # a job: nobody's kernel
    assert [k for k, _ in board.starts_of("alice")] == ["k1"]
    assert board.starts_of("alice")[0][1].about == {"name": "dss-k8s", "execution_config": "k8s"}
    board.enter("k1", phases.READY)
    assert board.starts_of("alice") == []


def test_an_evicted_pod_says_so():
    """Guards: an evicted pod (or one whose node was lost) reported as a bare exit code."""
    import kubernetes.client as k

    from jupyter_dss_containers.backends.kubernetes.podstate import pod_state

    pod = k.V1Pod(
        metadata=k.V1ObjectMeta(name="p", namespace="n"),
        spec=k.V1PodSpec(containers=[k.V1Container(name="kernel", image="x")]),
        status=k.V1PodStatus(
            phase="Failed", reason="Evicted", message="The node was low on resource: memory. "
        ),
    )
    assert pod_state(pod) == ("exited", "Evicted: The node was low on resource: memory.")
