"""What goes into a job's container: its image, the runner, the pickled payload (or an R
job's files) and the command that runs them. Pure, apart from reading the runner's source
and the image recipes."""

from __future__ import annotations

import pickle
from pathlib import Path

from .. import images
from ..config import ConfigFile, ExecutionConfig, format_size
from . import rlang
from .model import JobError, JobRequest

JOB_DIR = rlang.JOB_DIR
RUNNER = Path(__file__).with_name("runner.py")


def image_for(config_file: ConfigFile, config: ExecutionConfig, code_env: str | None) -> str:
    """The config's image, or the image of a code environment layered on it."""
    try:
        return images.resolve_image(config_file, config, code_env)
    except ValueError as exc:  # an unknown env, or one not available for the config
        raise JobError(str(exc)) from None


def job_files(
    request: JobRequest, framed: bool, python: str, limit: int
) -> tuple[dict[str, bytes], list[str]]:
    """(files by absolute path, command). ``framed``: the job folder is read-only and the
    results come back framed in the log (Kubernetes); ``limit``: the largest payload."""
    if request.kind == "r" and framed:  # R writes elsewhere; the runner frames it to stdout
        out = rlang.WRITABLE_DIR
        files = rlang.r_files(request.code, request.inputs, request.outputs, out)
        files[f"{JOB_DIR}/runner.py"] = RUNNER.read_bytes()
        runner = [python, "-u", f"{JOB_DIR}/runner.py", "--frame", out, "--"]
        command = [*runner, *rlang.r_command()]
    elif request.kind == "r":
        files = rlang.r_files(request.code, request.inputs, request.outputs)
        command = rlang.r_command()
    else:
        import cloudpickle

        payload = {
            "kind": request.kind,
            "code": request.code,
            "inputs": request.inputs,
            "outputs": list(request.outputs),
            "operation": request.operation,
        }
        try:
            data = cloudpickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise JobError(f"the job's inputs cannot be pickled: {exc}") from None
        files = {f"{JOB_DIR}/payload.pkl": data, f"{JOB_DIR}/runner.py": RUNNER.read_bytes()}
        command = [python, "-u", f"{JOB_DIR}/runner.py"]
    files.update(request.files)
    size = sum(len(v) for v in files.values())
    if size > limit:
        raise JobError(
            f"the job's payload is {format_size(size)}, over the limit of "
            f"{format_size(limit)} (JobService.max_payload_bytes)"
        )
    return files, command
