"""Who runs next: per-user and per-config limits, shared fairly between users.

Pure: it looks at the service's jobs (in submission order) and says why a queued job must
still wait, or that it may start. Within one user, jobs start first come, first served.
Between users, a user's queue never holds back another user's job while its config has a
free slot: the free slots of a config go to the first queued job of each user who may run
one more, those with fewer jobs already running on that config first (then the earliest).
"""

from __future__ import annotations

from collections.abc import Iterable

from .model import QUEUED, RUNNING, STARTING, Job, JobQueueFull


def check_queue(owner: str, jobs: Iterable[Job], limit: int) -> None:
    """Refuse one more queued job of ``owner`` past ``limit``, naming the limit."""
    queued = sum(1 for j in jobs if j.owner == owner and j.state == QUEUED)
    if queued >= limit:
        raise JobQueueFull(
            f"{owner} already has {queued} jobs queued (limit {limit} per user, "
            "JobService.max_queued_jobs_per_user): wait for some to start, or cancel some"
        )


def wait_reason(job: Job, jobs: list[Job], max_per_user: int, max_per_config: int) -> str | None:
    """Why ``job`` (queued) must wait, or None when it may start now."""
    running = [j for j in jobs if j.state in (STARTING, RUNNING) and j is not job]
    per_user: dict[str, int] = {}
    on_config: dict[str, int] = {}
    for other in running:
        per_user[other.owner] = per_user.get(other.owner, 0) + 1
        if other.config == job.config:
            on_config[other.owner] = on_config.get(other.owner, 0) + 1
    mine = per_user.get(job.owner, 0)
    if mine >= max_per_user:
        return f"queued: {job.owner} already runs {mine} jobs (limit {max_per_user} per user)"
    heads: dict[str, tuple[int, Job]] = {}  # each user's first queued job, and its place
    for place, other in enumerate(jobs):
        if other.state == QUEUED and other.owner not in heads:
            heads[other.owner] = (place, other)
    own = next((place for place, other in enumerate(jobs) if other is job), len(jobs))
    first = heads.get(job.owner, (own, job))[1]
    if first is not job:
        return f"queued: behind {job.owner}'s earlier job {first.id}"
    here = sum(on_config.values())
    free = max_per_config - here
    if free <= 0:
        return (
            f"queued: config {job.config!r} already runs {here} jobs "
            f"(limit {max_per_config} per config)"
        )

    def rank(owner: str, place: int) -> tuple[int, int]:
        return on_config.get(owner, 0), place

    mine_rank = rank(job.owner, own)
    ahead = [
        other
        for owner, (place, other) in heads.items()
        if owner != job.owner
        and other.config == job.config
        and per_user.get(owner, 0) < max_per_user
        and rank(owner, place) < mine_rank
    ]
    if len(ahead) >= free:
        return (
            f"queued: config {job.config!r} has {free} free slot(s), first for jobs of users "
            f"with fewer jobs running there (next: job {ahead[0].id})"
        )
    return None
