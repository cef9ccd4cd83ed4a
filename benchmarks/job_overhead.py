"""Wall-time overhead of ``%%container`` over running the same cell in the local kernel.

One local ipykernel (``python3``) runs, interleaved, the cell as is and the cell under
``%%container CONFIG --in a --out b``; the overhead is the difference of the medians.
The config is written to a temporary file, pointing at ``--image`` (an image with Python,
cloudpickle and numpy; default: the job test image of ``tests/job_images.py``, built on
first use). Nothing is asserted; it prints a table (and ``--json`` writes the samples).
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
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
