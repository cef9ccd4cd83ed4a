"""Wall-time overhead of ``%%container`` over running the same cell in the local kernel.

One local ipykernel (``python3``) runs, interleaved, the cell as is and the cell under
``%%container CONFIG --in a --out b``; the overhead is the difference of the medians.
The config is written to a temporary file, pointing at ``--image`` (an image with Python,
cloudpickle and numpy; default: the job test image of ``tests/job_images.py``, built on
first use). Nothing is asserted; it prints a table (and ``--json`` writes the samples).

``--trivial``: the cell ``x = 41 + 1`` (``--out x``) instead, in four variants: local, cold
(the config's default workspace: the kernel's folder bind-mounted), cold with
``workspace: {mount: none}`` (a copy of the kernel's folder travels with the job) and pooled
(``warm_pool: {jobs: 1}``, which implies ``mount: none``; the kernel's own job service
fills the pool at its first job, and before each timed pooled cell an untimed cell waits
until a runner is ready again, as it is for a user who does not run cells back to back).
The kernel runs in an empty temporary folder, so the copy is tiny.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client import KernelManager

CELL = "import numpy as np\nb = (a @ a.T).sum(axis=0)\nprint(b.shape)"
SETUP = "%load_ext jupyter_dss_containers\nimport numpy as np\na = np.random.rand(200, 200)"
TRIVIAL = "x = 41 + 1"
#: an untimed cell: until the kernel's job service has a pooled runner ready again
POOL_READY = """\
import time as _t
from jupyter_dss_containers.jobs import api as _api
_end = _t.monotonic() + 120
while _api.service().job_pool.size("bench-pooled") < 1 and _t.monotonic() < _end:
    _t.sleep(0.05)
assert _api.service().job_pool.size("bench-pooled") == 1, "no pooled runner"
"""


def default_image() -> str:
    import docker

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from job_images import job_image

    from jupyter_dss_containers import images
    from jupyter_dss_containers.config import load_config

    client = docker.from_env(timeout=600)
    base = images.build_base_image(load_config(None).base_images["default"], client)
    return job_image(client, base)


def timed(kc, code: str) -> float:
    started = time.perf_counter()
    reply = kc.execute_interactive(code, timeout=300, output_hook=lambda msg: None)
    elapsed = time.perf_counter() - started
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {reply['content'].get('evalue')}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--image", default=None)
    parser.add_argument("--memory", default="512m")
    parser.add_argument("--json", default=None)
    parser.add_argument("--trivial", action="store_true", help="x = 41 + 1: local, cold and pooled")
    args = parser.parse_args()
    if args.trivial:
        return trivial(args)

    image = args.image or default_image()
    folder = Path(tempfile.mkdtemp(prefix="dss-job-bench-"))
    config = folder / "bench.yaml"
    config.write_text(
        "execution_configs:\n  bench:\n    backend: docker\n"
        f"    image: {image}\n    docker: {{resources: {{memory: {args.memory}}}}}\n"
        "    permissions: {groups: ['*']}\n"
    )
    os.environ["DSS_CONTAINERS_CONFIG"] = str(config)  # the local kernel inherits it

    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    samples: dict[str, list[float]] = {"local": [], "%%container": []}
    try:
        kc.wait_for_ready(timeout=60)
        timed(kc, SETUP)
        container_cell = f"%%container bench --in a --out b\n{CELL}"
        for i in range(args.warmup + args.runs):
            local, remote = timed(kc, CELL), timed(kc, container_cell)
            if i >= args.warmup:
                samples["local"].append(local)
                samples["%%container"].append(remote)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    medians = {k: statistics.median(v) for k, v in samples.items()}
    print(f"image {image}, {args.runs} runs after {args.warmup} warm-up, cell:\n{CELL}\n")
    print(f"{'variant':<14}{'median s':>10}{'min s':>9}{'max s':>9}")
    for name, values in samples.items():
        print(f"{name:<14}{medians[name]:>10.3f}{min(values):>9.3f}{max(values):>9.3f}")
    overhead = medians["%%container"] - medians["local"]
    print(f"\noverhead of %%container (difference of medians): {overhead:.3f} s")
    if args.json:
        data = {"samples": samples, "medians": medians, "overhead": overhead, "image": image}
        Path(args.json).write_text(json.dumps(data, indent=2))


def load() -> str:
    """The 1-, 5- and 15-minute load averages and the core count, for the record."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def trivial(args: argparse.Namespace) -> None:
    """``x = 41 + 1``: local, cold (workspace mounted / none) and pooled, interleaved."""
    image = args.image or default_image()
    folder = Path(tempfile.mkdtemp(prefix="dss-job-bench-"))
    work = folder / "work"
    work.mkdir()
    limits = f"docker: {{resources: {{memory: {args.memory}}}}}"
    common = f"    backend: docker\n    image: {image}\n    {limits}\n"
    common += "    permissions: {groups: ['*']}\n"
    config = folder / "bench.yaml"
    config.write_text(
        "execution_configs:\n"
        f"  bench:\n{common}"
        f"  bench-none:\n{common}    workspace: {{mount: none}}\n"
        f"  bench-pooled:\n{common}    warm_pool: {{jobs: 1}}\n"
    )
    os.environ["DSS_CONTAINERS_CONFIG"] = str(config)
    variants = {
        "local": TRIVIAL,
        "cold (mount)": f"%%container bench --out x\n{TRIVIAL}",
        "cold (none)": f"%%container bench-none --out x\n{TRIVIAL}",
        "pooled": f"%%container bench-pooled --out x\n{TRIVIAL}",
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(work))
    kc = km.client()
    kc.start_channels()
    started_load = load()
    try:
        kc.wait_for_ready(timeout=60)
        timed(kc, "%load_ext jupyter_dss_containers")
        for i in range(args.warmup + args.runs):
            for name, code in variants.items():
                if name == "pooled" and i > 0:
                    timed(kc, POOL_READY)
                elapsed = timed(kc, code)
                if i >= args.warmup:
                    samples[name].append(elapsed)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)  # the kernel removes its pooled runner at exit
    ended_load = load()
    medians = {k: statistics.median(v) for k, v in samples.items()}
    print(f"image {image}, {args.runs} runs after {args.warmup} warm-up, cell: {TRIVIAL}")
    print(f"at start: {started_load}; at end: {ended_load}\n")
    print(f"{'variant':<14}{'median s':>10}{'min s':>9}{'max s':>9}{'overhead s':>12}")
    for name, values in samples.items():
        extra = medians[name] - medians["local"]
        print(
            f"{name:<14}{medians[name]:>10.3f}{min(values):>9.3f}{max(values):>9.3f}{extra:>12.3f}"
        )
    if args.json:
        data = {"samples": samples, "medians": medians, "image": image}
        data["load"] = [started_load, ended_load]
        Path(args.json).write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
