"""The pure parts of GPU allocation and multi-host placement: the GPU list parser, the
choice of free ids, the race verdict, the host choice, the create request's GPU fields and
the config checks. No engine: these run everywhere."""

from __future__ import annotations

import pytest

from jupyter_dss_containers.backends.base import WorkloadSpec
from jupyter_dss_containers.backends.docker import containers as c
from jupyter_dss_containers.backends.docker import gpus as g
from jupyter_dss_containers.backends.docker import placement as p
from jupyter_dss_containers.config import ConfigError, parse_config

SMI = """GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-11111111-2222)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-33333333-4444)
  MIG 1g.5gb Device 0: (UUID: MIG-aaaa)
GPU 2: Tesla T4
"""


def _config(docker: dict, name: str = "gpu") -> object:
    data = {
        "execution_configs": {
            name: {"backend": "docker", "image": "default", "docker": docker},
        }
    }
    return parse_config(data, "test.yaml").execution_configs[name]


def test_nvidia_smi_list_is_parsed_with_indexes_and_uuids():
    """Guards: a parser that takes MIG lines as GPUs or drops a GPU without a UUID."""
    found = g.parse_gpu_list(SMI)
    assert [x.index for x in found] == ["0", "1", "2"]
    assert found[0].uuid == "GPU-11111111-2222" and found[2].uuid is None
    assert found[2].name == "Tesla T4"


def _row(cid: str, ids: str, state: str = "running", created: int = 1) -> dict:
    return {
        "Id": cid,
        "State": state,
        "Created": created,
        "Labels": {g.GPU_IDS: ids, "dss-containers.jupyter.org/owner": "alice"},
    }


def test_free_ids_skip_those_held_by_live_containers_only():
    """Guards: counting an exited container's GPUs as held, or handing out a held one."""
    gpus = g.parse_gpu_list(SMI)
    taken = g.held(g.holders([_row("a", "0"), _row("b", "1", state="exited")]))
    assert set(taken) == {"0"}
    assert g.choose(gpus, taken, 1) == ("1",)
    assert g.choose(gpus, taken, 2) == ("1", "2")
    assert g.choose(gpus, taken, 3) is None
    assert "held by kernel" not in g.busy_message(gpus, taken, 3, "d")  # kind label absent
    assert "2 of 3 free on d" in g.busy_message(gpus, taken, 3, "d")


def test_the_earlier_created_container_wins_a_race_on_both_sides():
    """Guards: a verdict that lets both servers keep GPU 0 (or that both give it up when
    one of them created first)."""
    first = g.Holder("aaa", ("0",), 100, "created", "kernel x")
    second = g.Holder("bbb", ("0", "1"), 200, "created", "kernel y")
    assert g.lost_to(first, [first, second]) is None
    assert g.lost_to(second, [first, second]) == first
    same_time = g.Holder("ccc", ("1",), 200, "created", "kernel z")
    # one of two created in the same nanosecond wins by id, the same answer on both sides
    assert (g.lost_to(second, [same_time]) is None) != (g.lost_to(same_time, [second]) is None)


def test_created_times_order_to_the_nanosecond():
    a = g.created_ns("2026-12-02T04:00:00.000000123Z")
    b = g.created_ns("2026-12-02T04:00:00.00000013Z")
    assert a < b and g.created_ns("") == 0


def test_create_request_passes_the_allocated_ids_explicitly():
    """Guards: a DeviceRequest by count (every container on GPU 0) instead of the ids."""
    config = _config({"gpus": 2})
    spec = WorkloadSpec(name="k", image="img", command=["x"], labels={"a": "b"})
    args = c.create_args(config, spec, api_version="1.41", user="1000:100", gpu_ids=("1", "3"))
    requests = args["host_config"]["DeviceRequests"]
    assert requests == [
        {
            "Driver": "",
            "Count": 0,
            "DeviceIDs": ["1", "3"],
            "Capabilities": [["gpu"]],
            "Options": {},
        }
    ]
    assert args["labels"][g.GPU_IDS] == "1,3"
    assert args["environment"]["NVIDIA_VISIBLE_DEVICES"] == "1,3"
    with pytest.raises(ValueError):
        c.create_args(config, spec, api_version="1.41", user="1000:100", gpu_ids=("1",))


def test_env_mode_passes_ids_without_a_device_request():
    """Guards: the nvidia runtime's legacy mode (and this engine, which has no runtime)
    getting a DeviceRequest the daemon cannot satisfy."""
    config = _config({"gpus": 1, "gpu_request": "env", "resources": {"memory": "256m"}})
    spec = WorkloadSpec(name="k", image="img", command=["x"], labels={})
    args = c.create_args(config, spec, api_version="1.41", user="1000:100", gpu_ids=("0",))
    assert "DeviceRequests" not in args["host_config"]
    assert args["environment"]["NVIDIA_VISIBLE_DEVICES"] == "0"
    assert args["labels"][c.MEMORY_LIMIT] == str(256 * 1024 * 1024)


def _room(name: str, free_mem: int, gpus_free: int | None = None, error: str | None = None):
    return p.HostRoom(
        name,
        f"unix:///{name}",
        error=error,
        memory_total=None if error else 8 << 30,
        memory_used=(8 << 30) - free_mem,
        gpus_total=None if gpus_free is None else 2,
        gpus_free=gpus_free,
    )


def test_host_with_most_free_memory_is_chosen_and_ties_go_to_the_first():
    """Guards: placing by list order alone (every start on the first host)."""
    rooms = [_room("a", 4 << 30), _room("b", 6 << 30)]
    assert p.choose_host(rooms, 1 << 30, 0)[0] == "b"
    assert p.choose_host([_room("a", 4 << 30), _room("b", 4 << 30)], 1 << 30, 0)[0] == "a"


def test_free_gpus_come_before_free_memory_and_dead_hosts_are_skipped_with_why():
    """Guards: a GPU start sent to the host with more memory but no free GPU."""
    rooms = [_room("a", 6 << 30, gpus_free=0), _room("b", 1 << 30, gpus_free=1)]
    name, reason = p.choose_host(rooms, 512 << 20, 1)
    assert name == "b" and "skipped: a (0 of 2 GPUs free, 1 asked)" in reason
    dead = [
        _room("a", 0, error="Docker daemon at unix:///a is unreachable: refused"),
        _room("b", 1 << 30),
    ]
    name, reason = p.choose_host(dead, None, 0)
    assert name == "b" and "skipped: a (Docker daemon at unix:///a is unreachable" in reason


def test_no_room_waits_only_when_a_live_host_could_ever_fit():
    """Guards: queueing forever for 3 GPUs on hosts of 2, or refusing what could wait."""
    rooms = [_room("a", 6 << 30, gpus_free=0)]
    with pytest.raises(g.GPUsBusy) as busy:
        p.choose_host(rooms, None, 1, queue=True)
    assert busy.value.queue
    with pytest.raises(g.GPUsBusy) as never:
        p.choose_host(rooms, None, 3, queue=True)
    assert not never.value.queue


def test_hosts_config_gives_each_host_the_config_settings_and_its_own_address():
    config = _config(
        {
            "gpus": 1,
            "resources": {"memory": "1g"},
            "hosts": [
                {"name": "big", "host": "unix:///a.sock", "memory": "16g"},
                {"host": "tcp://10.0.0.2:2376"},
            ],
        }
    )
    hosts = config.docker.hosts
    assert [h.name for h in hosts] == ["big", "host2"]
    assert hosts[0].settings.host == "unix:///a.sock" and hosts[0].settings.gpus == 1
    assert hosts[1].settings.memory == 1 << 30 and hosts[0].memory == 16 << 30
    assert config.docker.is_remote  # one of them is: the transport and workspace say tcp


@pytest.mark.parametrize(
    ("docker", "path"),
    [
        ({"host": "unix:///a", "hosts": [{"host": "unix:///b"}]}, "docker.host"),
        (
            {"hosts": [{"name": "x", "host": "unix:///a"}, {"name": "x", "host": "unix:///b"}]},
            "hosts[1].name",
        ),
        ({"gpus": ["0"], "hosts": [{"host": "unix:///a"}]}, "docker.gpus"),
    ],
)
def test_bad_hosts_settings_are_refused_naming_the_path(docker, path):
    with pytest.raises(ConfigError) as refused:
        _config(docker)
    assert path in str(refused.value)


def test_the_gpu_probe_is_a_locked_down_throw_away_container():
    """Guards: a probe with capabilities or a network, or one that asks for no GPU (so the
    NVIDIA runtime mounts no nvidia-smi and the host looks GPU-less)."""
    from jupyter_dss_containers.backends.docker.gpualloc import probe_request

    config = _config({"gpus": 1, "runtime": "nvidia"})
    args = probe_request(config.docker)
    assert args["cap_drop"] == ["ALL"] and args["network_mode"] == "none"
    assert args["security_opt"] == ["no-new-privileges"] and args["runtime"] == "nvidia"
    (request,) = args["device_requests"]
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu", "utility"]]
    assert "device_requests" not in probe_request(_config({"gpus": 1, "gpu_request": "env"}).docker)


def test_no_caller_env_or_image_env_widens_the_gpus():
    """Guards: a caller's (or a CUDA image's) NVIDIA_VISIBLE_DEVICES=all giving every GPU
    to a container on a daemon whose default runtime is nvidia."""
    spec = WorkloadSpec(
        name="k", image="img", command=["x"], labels={}, env={"NVIDIA_VISIBLE_DEVICES": "all"}
    )
    for docker, ids, expected in (
        ({}, (), "void"),
        ({"gpus": 1, "runtime": "nvidia"}, ("1",), "1"),
        ({"gpus": ["2", "3"]}, (), "2,3"),
        ({"gpus": "all"}, (), "all"),
    ):
        args = c.create_args(
            _config(docker), spec, api_version="1.41", user="1000:100", gpu_ids=ids
        )
        assert args["environment"]["NVIDIA_VISIBLE_DEVICES"] == expected, docker


async def test_the_line_serves_waiting_starts_in_order_and_refusers_at_once():
    """Guards: a later start overtaking an earlier one when a GPU frees, a position that
    is not shown, and a ``refuse`` start waiting behind queued ones."""
    import asyncio

    from jupyter_dss_containers.backends.docker.gpualloc import GpuLine

    line = GpuLine(poll=30)
    free = {"n": 0}
    order: list[str] = []
    seen: dict[str, str] = {}

    def attempt(name: str):
        async def go() -> str:
            if free["n"] == 0:
                raise g.GPUsBusy("0 of 1 free", queue=True)
            free["n"] -= 1
            order.append(name)
            return name

        return go

    first = asyncio.create_task(line.run(attempt("a"), 60, lambda m: seen.__setitem__("a", m)))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(line.run(attempt("b"), 60, lambda m: seen.__setitem__("b", m)))
    await asyncio.sleep(0.05)
    assert "position 1 in line: 0 of 1 free" in seen["a"]
    assert "position 2 in line" in seen["b"]
    with pytest.raises(g.GPUsBusy, match="0 of 1 free"):
        await line.run(attempt("c"), 0, lambda m: None)  # refuse: at once, not in line
    free["n"] = 1
    line.freed()
    assert (await first)[0] == "a"
    free["n"] = 1
    line.freed()
    assert (await second)[0] == "b" and order == ["a", "b"]
