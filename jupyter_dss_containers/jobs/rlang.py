"""R jobs: the cell as an R script, data frames in and out as CSV files.

The image needs only R (``Rscript``): no Python, no cloudpickle. Inputs become R
variables (data frames read from CSV, scalars as literals), the cell runs with its
top-level values printed as in the R console, and each ``--out`` name is written back
as CSV, kept as bytes by the service and read as a pandas DataFrame in the submitting
kernel only.

Where the job folder is read-only (a Secret volume on Kubernetes), the outputs and the
error go to a writable folder under /tmp instead (an emptyDir with ``read_only_root``), and
the job runner, run in its ``--frame`` mode around ``Rscript``, frames them into the pod's
log as if they were in the job folder; such images need ``python3`` too.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..imagecontract import JOB_FOLDER as JOB_DIR
from ..imagecontract import JOB_OUT_FOLDER
from .model import JobError, RemoteError
from .results import JobResult

#: where R writes its outputs and error when the job folder is read-only
WRITABLE_DIR = JOB_OUT_FOLDER
R_NAME = re.compile(r"^[A-Za-z.][A-Za-z0-9._]*$")

_WRAPPER = """\
.dss_dir <- "{job_dir}"
.dss_out <- "{out_dir}"
{reads}
.dss_status <- tryCatch({{
  source(file.path(.dss_dir, "cell.R"), echo = FALSE, print.eval = TRUE, local = globalenv())
  dir.create(file.path(.dss_out, "out"), showWarnings = FALSE, mode = "0700")
  for (.dss_name in c({outs})) {{
    if (!exists(.dss_name, envir = globalenv())) {{
      stop(sprintf("--out name not defined by the cell: %s", .dss_name), call. = FALSE)
    }}
    write.csv(as.data.frame(get(.dss_name, envir = globalenv())),
              file.path(.dss_out, "out", paste0(.dss_name, ".csv")), row.names = FALSE)
  }}
  0L
}}, error = function(e) {{
  call <- conditionCall(e)
  where <- if (is.null(call)) "" else paste0("in ", paste(deparse(call), collapse = " "))
  writeLines(c(conditionMessage(e), where), file.path(.dss_out, "error.txt"))
  1L
}})
quit(save = "no", status = .dss_status)
"""


def r_files(
    code: str, inputs: dict[str, Any], outputs: tuple[str, ...], out_dir: str = JOB_DIR
) -> dict[str, bytes]:
    """The files of an R job: the wrapper, the cell, and one CSV per data frame input.

    The wrapper writes the outputs and the error under ``out_dir`` (an existing folder).
    """
    for name in (*inputs, *outputs):
        if not R_NAME.match(name):
            raise JobError(f"--in/--out name {name!r} is not a valid R variable name")
    files = {f"{JOB_DIR}/cell.R": code.encode()}
    reads = []
    for name, value in inputs.items():
        if hasattr(value, "to_csv"):  # a pandas DataFrame or Series
            # flat, not in a subfolder: a Secret volume cannot hold the mount point of another
            files[f"{JOB_DIR}/in.{name}.csv"] = value.to_csv(index=False).encode()
            reads.append(
                f'{name} <- read.csv(file.path(.dss_dir, "in.{name}.csv"), '
                "stringsAsFactors = FALSE, check.names = FALSE)"
            )
        else:
            reads.append(f"{name} <- {_r_literal(name, value)}")
    outs = ", ".join(json.dumps(n) for n in outputs)
    files[f"{JOB_DIR}/main.R"] = _WRAPPER.format(
        job_dir=JOB_DIR, out_dir=out_dir, reads="\n".join(reads), outs=outs
    ).encode()
    return files


def r_command() -> list[str]:
    return ["Rscript", "--vanilla", f"{JOB_DIR}/main.R"]


def r_outcome(files: dict[str, bytes], outputs: tuple[str, ...], job_id: str) -> JobResult:
    """The R job's result from the files it left (``error.txt``, ``out/NAME.csv``, keyed
    relative to the job folder), or its R error as a :class:`RemoteError`. The CSV files
    stay bytes: they become DataFrames in the submitting kernel only (``jobs.api``)."""
    if "error.txt" in files:
        message, _, where = files["error.txt"].decode(errors="replace").partition("\n")
        raise RemoteError("R error", message, f"Error {where.strip()}: {message}\n", job_id)
    tables = {}
    for name in outputs:
        data = files.get(f"out/{name}.csv")
        if data is None:
            raise JobError(f"R job {job_id}: output {name!r} was not written")
        tables[name] = data
    return JobResult({"ok": True, "displays": [], "tables": list(outputs)}, tables=tables)


def _r_literal(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple) and all(isinstance(v, int | float | str) for v in value):
        return "c(" + ", ".join(_r_literal(name, v) for v in value) + ")"
    raise JobError(
        f"--in {name}: R jobs take data frames, numbers, strings or lists of them, "
        f"not {type(value).__name__}"
    )
