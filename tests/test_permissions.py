"""The one permission check and where its identity comes from, as pure unit tests (no
server, no engine): who may use a config, the refusal's exact words, which source of groups
wins, and which identity a call is judged as. These are the tests the mutation score of
``permissions.py`` rests on (``benchmarks/mutation.sh``).
"""

from __future__ import annotations

import pytest

from jupyter_dss_containers import permissions
from jupyter_dss_containers.config import ConfigFile, ExecutionConfig
from jupyter_dss_containers.errors import ReportedError
from jupyter_dss_containers.permissions import (
    EVERYONE,
    Identity,
    PermissionDenied,
    check_permission,
    current_identity,
    identity_for,
    is_permitted,
    permitted_configs,
    process_identity,
    register_identity_resolver,
    request_identity,
)


def config(name: str, groups: tuple[str, ...] = (), users: tuple[str, ...] = ()):
    return ExecutionConfig(name=name, backend="docker", image="default", groups=groups, users=users)


def config_file(*configs: ExecutionConfig, groups: dict | None = None) -> ConfigFile:
    return ConfigFile(
        source="inline",
        execution_configs={c.name: c for c in configs},
        base_images={},
        code_envs={},
        groups=groups or {},
        defaults={},
    )


ALICE = Identity("alice", frozenset({"analysts", "gpu-users"}))


@pytest.fixture
def no_resolvers(monkeypatch):
    """The module's resolver list, emptied for the test (and restored after)."""
    monkeypatch.setattr(permissions, "_resolvers", [])
    return permissions._resolvers


def test_who_is_permitted():
    """Guards each way in (everyone, a named user, one shared group) and that nothing
    else lets one in: no group in common, a user name that is only a group's name."""
    assert EVERYONE == "*"
    assert is_permitted(Identity("x"), config("open", groups=("*",)))
    assert is_permitted(Identity("x"), config("open", groups=("staff", "*")))
    assert is_permitted(Identity("bob"), config("named", users=("carol", "bob")))
    assert is_permitted(ALICE, config("shared", groups=("gpu-users",)))
    assert not is_permitted(ALICE, config("other", groups=("admins",)))
    assert not is_permitted(Identity("admins"), config("other", groups=("admins",)))
    assert not is_permitted(
        Identity("bob", frozenset({"carol"})), config("named", users=("carol",))
    )
    assert not is_permitted(Identity("x"), config("closed"))
    assert is_permitted(ALICE, config("both", groups=("admins",), users=("alice",)))


def test_check_permission_passes_silently_when_permitted():
    """Guards the no-op path: a permitted identity gets None, not an exception."""
    assert check_permission(ALICE, config("gpu", groups=("gpu-users",))) is None
    assert check_permission(Identity("bob"), config("named", users=("bob",))) is None


@pytest.mark.parametrize(
    ("cfg", "who", "expected"),
    [
        (
            config("gpu", groups=("gpu-users", "admins")),
            Identity("bob", frozenset({"zeta", "analysts"})),
            "user 'bob' may not use execution configuration 'gpu': it is open to groups "
            "gpu-users, admins (bob is in analysts, zeta)",
        ),
        (
            config("mine", users=("carol", "dave")),
            Identity("bob"),
            "user 'bob' may not use execution configuration 'mine': it is open to users "
            "carol, dave (bob is in no groups)",
        ),
        (
            config("mixed", groups=("admins",), users=("carol",)),
            Identity("bob", frozenset({"analysts"})),
            "user 'bob' may not use execution configuration 'mixed': it is open to groups "
            "admins and users carol (bob is in analysts)",
        ),
        (
            config("closed"),
            Identity("bob"),
            "user 'bob' may not use execution configuration 'closed': it is open to nobody "
            "(bob is in no groups)",
        ),
    ],
)
def test_the_refusal_names_the_config_and_who_may_use_it(cfg, who, expected):
    """Guards the refusal's words, field by field: the user, the config, the groups and
    users it is open to (in the config's order), the user's own groups (sorted)."""
    with pytest.raises(PermissionDenied) as refused:
        check_permission(who, cfg)
    assert str(refused.value) == expected
    assert refused.value.message == expected


def test_a_refusal_is_a_403_permission_error():
    """Guards how the REST API answers it (403) and that callers catching PermissionError
    see it."""
    assert PermissionDenied.status == 403
    denied = PermissionDenied("no")
    assert isinstance(denied, PermissionError) and isinstance(denied, ReportedError)
    assert denied.status_code == 403 and str(denied) == "no"


def test_groups_come_from_the_hub_when_it_says_else_from_the_file():
    """Guards the source of groups: JupyterHub's list wins, even when empty; else the
    config file's map; an unknown user has none."""
    file = config_file(groups={"alice": ("analysts",), "bob": ("gpu-users", "analysts")})
    assert identity_for("alice", file) == Identity("alice", frozenset({"analysts"}))
    assert identity_for("bob", file).groups == frozenset({"gpu-users", "analysts"})
    assert identity_for("nobody", file) == Identity("nobody", frozenset())
    assert identity_for("alice", file, hub_groups=["gpu-users"]).groups == {"gpu-users"}
    assert identity_for("alice", file, hub_groups=[]).groups == frozenset()
    assert isinstance(identity_for("alice", file).groups, frozenset)


def test_the_process_acts_for_the_hub_user_else_the_os_user(monkeypatch):
    """Guards who a kernel started outside a request is judged as: $JUPYTERHUB_USER, else
    the OS user, with that user's groups from the file."""
    file = config_file(groups={"hubuser": ("analysts",), "osuser": ("admins",)})
    monkeypatch.setattr(permissions.getpass, "getuser", lambda: "osuser")
    monkeypatch.setenv("JUPYTERHUB_USER", "hubuser")
    assert process_identity(file) == Identity("hubuser", frozenset({"analysts"}))
    monkeypatch.setenv("JUPYTERHUB_USER", "")
    assert process_identity(file) == Identity("osuser", frozenset({"admins"}))
    monkeypatch.delenv("JUPYTERHUB_USER")
    assert process_identity(file).username == "osuser"


def test_the_request_identity_wins_then_resolvers_then_the_process(monkeypatch, no_resolvers):
    """Guards which identity a check uses: the request's (set by the server extension)
    before any resolver, then the first resolver that knows, then the process's."""
    file = config_file()
    monkeypatch.setattr(permissions.getpass, "getuser", lambda: "osuser")
    monkeypatch.delenv("JUPYTERHUB_USER", raising=False)
    assert current_identity(file) == Identity("osuser")
    asked: list[str] = []

    def unknowing(cf: ConfigFile) -> Identity | None:
        asked.append("unknowing")
        assert cf is file
        return None

    def knowing(cf: ConfigFile) -> Identity | None:
        asked.append("knowing")
        return Identity("resolved")

    def late(cf: ConfigFile) -> Identity | None:
        asked.append("late")
        return Identity("late")

    for resolver in (unknowing, knowing, late, unknowing):  # the second unknowing: ignored
        register_identity_resolver(resolver)
    assert no_resolvers == [unknowing, knowing, late]
    assert current_identity(file) == Identity("resolved")
    assert asked == ["unknowing", "knowing"]  # stops at the first that knows
    asked.clear()
    token = request_identity.set(Identity("requester"))
    try:
        assert current_identity(file) == Identity("requester")
        assert asked == []  # no resolver consulted
    finally:
        request_identity.reset(token)
    assert request_identity.get() is None


def test_permitted_configs_keeps_the_files_order():
    """Guards the list the REST API and the kernel picker show: only permitted configs,
    in the file's order."""
    file = config_file(
        config("b", groups=("analysts",)),
        config("a", groups=("admins",)),
        config("c", groups=("*",)),
        config("d", users=("alice",)),
    )
    assert [c.name for c in permitted_configs(ALICE, file)] == ["b", "c", "d"]
    assert [c.name for c in permitted_configs(Identity("x"), file)] == ["c"]
