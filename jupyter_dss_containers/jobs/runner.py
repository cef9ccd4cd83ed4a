"""The in-container entry point of a Python job: read the payload, run it, write the result.

Copied into the container and run by the image's Python, it imports nothing from this
package (the image needs Python, cloudpickle and the job's own libraries). The result is two
files in the job folder (``jobs/results.py`` says why): ``result.json``, the outcome as
plain data the service checks and reads, and ``values.pkl``, the Python values
cloudpickled, which only the submitting kernel loads. Where files cannot be copied out of a
stopped workload (Kubernetes), ``DSS_FILES_TO_LOG_FILE`` names a private file holding a
random token, and the two files go to stdout, framed as ``backends/logfiles.py`` describes.

``runner.py --wait`` (``jobs/pool.py``) blocks on its pipe ``.go`` until one job's payload
is in the job folder, then runs it as a cold runner does.

``runner.py --frame DIR -- COMMAND...`` (R on Kubernetes; standard library only) runs
COMMAND without the token, frames the files it wrote under DIR into stdout as if in the job
folder, and exits with COMMAND's exit code.

Where no workspace is shared (``jobs/snapshot.py``), ``workdir.tar.gz`` (the caller's
folder) and ``workdir.json`` (its path) are unpacked there (else under ``/tmp/.dss-work``),
the job runs in it, and the files it created or changed come back as ``workdir/PATH``.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import hashlib
import io
import json
import linecache
import os
import pickle
import signal
import stat
import subprocess
import sys
import tarfile
import time
import traceback
import urllib.parse
import warnings

JOB_DIR = os.path.dirname(os.path.abspath(__file__))
PAYLOAD = os.path.join(JOB_DIR, "payload.pkl")
RESULT = os.path.join(JOB_DIR, "result.json")
VALUES = os.path.join(JOB_DIR, "values.pkl")
LIBS = os.path.join(JOB_DIR, "lib")
CELL = "<container-cell>"
WORKDIR_ARCHIVE = os.path.join(JOB_DIR, "workdir.tar.gz")
WORKDIR_INFO = os.path.join(JOB_DIR, "workdir.json")
WORKDIR_BACK = os.path.join(JOB_DIR, "workdir")
#: where the copy goes when the image's user cannot make the folder's own path
SCRATCH = "/tmp/.dss-work"
#: (the folder the copy was unpacked in, {relative path: SHA-256 as unpacked})
_WORKDIR: list = []


def _log_token() -> str:
    """The frame token, from the private file the environment names (the path, not the
    token, is in the environment; it is taken out before the job's code runs)."""
    path = os.environ.pop("DSS_FILES_TO_LOG_FILE", "")
    if not path:
        return ""
    with open(path) as f:
        return f.read().strip()


_LOG_TOKEN = _log_token()

try:
    import cloudpickle as _pickler
except ModuleNotFoundError:  # plain data and library objects load with pickle alone
    _pickler = pickle


class _Missing(Exception):
    """A library the job needs is not in the image."""


def _cancelled(signum: int, _frame: object) -> None:
    """SIGTERM (the job was cancelled) becomes an exception in the job's code, so its
    ``finally`` blocks and context managers run within the service's grace (as PID 1, as
    in a pod, this process would otherwise ignore SIGTERM until killed)."""
    raise SystemExit(f"dss-containers: the job was cancelled (signal {signum})")


def main() -> int:
    signal.signal(signal.SIGTERM, _cancelled)
    warnings.filterwarnings("ignore", message=".*non-interactive.*")
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.path.insert(0, LIBS)
    try:
        with open(PAYLOAD, "rb") as f:
            payload = _pickler.load(f)
    except ModuleNotFoundError as exc:
        return _write(_missing(exc, "to load the job's inputs"))
    finally:
        _unlink(PAYLOAD)  # the inputs do not stay in the container longer than needed
    kind = payload["kind"]
    displays: list[dict] = []
    try:
        _unpack_workdir()
        if kind == "python":
            fields, values = _run_code(payload, displays)
        elif kind == "model":
            fields, values = _run_model(payload["operation"], displays)
        elif kind == "recipe":
            fields, values = _run_recipe(payload)
        else:
            raise ValueError(f"unknown job kind {kind!r}")
    except ModuleNotFoundError as exc:
        return _write(_missing(exc, "to run the job", exc.__traceback__))
    except BaseException as exc:  # the user's code may raise anything, SystemExit included
        return _write(_error(exc, exc.__traceback__))
    _collect_figures(displays)
    return _write({"ok": True, **fields, "displays": displays}, values)


# --------------------------------------------------------------------------- code


def _run_code(payload: dict, displays: list) -> tuple[dict, dict]:
    namespace = {"__name__": "__main__", "display": lambda *objs: _display(objs, displays)}
    namespace.update(payload.get("inputs") or {})
    code = payload["code"]
    linecache.cache[CELL] = (len(code), None, code.splitlines(True), CELL)
    tree = ast.parse(code, CELL)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, CELL, "exec"), namespace)
    if last is not None:
        value = eval(compile(last, CELL, "eval"), namespace)
        if value is not None:
            _display((value,), displays)
    missing = [n for n in payload.get("outputs") or () if n not in namespace]
    if missing:
        raise NameError(f"--out names not defined by the cell: {', '.join(missing)}")
    return {}, {"outputs": {n: namespace[n] for n in payload.get("outputs") or ()}}


def _display(objs: tuple, displays: list) -> None:
    for obj in objs:
        displays.append(_bundle(obj))


def _bundle(obj: object) -> dict:
    """A MIME bundle like IPython's formatters make (the common rich representations);
    its values are strings (binary ones base64), as the result document requires."""
    if hasattr(obj, "savefig") and hasattr(obj, "canvas"):  # a matplotlib figure
        return {"text/plain": repr(obj), "image/png": _figure_png(obj)}
    bundle = {"text/plain": repr(obj)}
    for mime, method in (
        ("text/html", "_repr_html_"),
        ("text/markdown", "_repr_markdown_"),
        ("image/svg+xml", "_repr_svg_"),
        ("image/png", "_repr_png_"),
    ):
        func = getattr(obj, method, None)
        if not callable(func):
            continue
        try:
            value = func()
        except Exception:
            continue
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode()
        if value and isinstance(value, str):
            bundle[mime] = value
    return bundle


def _figure_png(fig: object) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _collect_figures(displays: list) -> None:
    """Figures left open by the code are shown, as the inline backend would."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    for number in plt.get_fignums():
        fig = plt.figure(number)
        displays.append({"text/plain": repr(fig), "image/png": _figure_png(fig)})
    plt.close("all")


# --------------------------------------------------------------------------- recipes


def _run_recipe(payload: dict) -> tuple[dict, dict]:
    import importlib

    op = payload["operation"]
    target = importlib.import_module(op["module"])
    for part in filter(None, op.get("attr", "").split(".")):
        target = getattr(target, part)
    return {}, {"value": target(**(op.get("params") or {}))}


# --------------------------------------------------------------------------- models


def _run_model(op: dict, displays: list) -> tuple[dict, dict]:
    """(plain fields for the result document, Python values for the values file)."""
    action = op["action"]
    if action in ("train", "retrain"):
        model = op["model"]
        started = time.perf_counter()
        model.fit(op["X"], op["y"], **(op.get("fit_params") or {}))
        seconds = time.perf_counter() - started
        task = _task(model, op.get("task"))
        pred, proba = _predict(model, op["X"], op.get("chunk_size"))
        fields = {"train_seconds": seconds, "task": task}
        fields["metrics"] = _metrics(task, op["y"], pred, proba)
        return fields, {"model": model}
    model = op["model"]
    pred, proba = _predict(model, op["X"], op.get("chunk_size"))
    if action == "score":
        return {}, {"predictions": pred, "probabilities": proba}
    if action == "evaluate":
        task = _task(model, op.get("task"))
        fields = {"task": task, "metrics": _metrics(task, op["y"], pred, proba)}
        if task == "classification":
            fields.update(_confusion(model, op["y"], pred, displays))
        return fields, {}
    raise ValueError(f"unknown model action {action!r}")


def _task(model: object, task: str | None) -> str:
    if task:
        return task
    from sklearn.base import is_classifier

    return "classification" if is_classifier(model) else "regression"


def _predict(model: object, X: object, chunk_size: int | None) -> tuple:
    """Predictions (and class probabilities) computed chunk by chunk to bound memory."""
    import numpy as np

    n = len(X)
    size = chunk_size or n or 1
    rows = X.iloc if hasattr(X, "iloc") else X
    chunks = [rows[i : i + size] for i in range(0, n, size)]
    pred = np.concatenate([np.asarray(model.predict(c)) for c in chunks])
    proba = None
    if hasattr(model, "predict_proba"):
        try:
            proba = np.concatenate([np.asarray(model.predict_proba(c)) for c in chunks])
        except (AttributeError, NotImplementedError):
            proba = None
    return pred, proba


def _metrics(task: str, y: object, pred: object, proba: object) -> dict:
    from sklearn import metrics as m

    if task == "regression":
        mse = float(m.mean_squared_error(y, pred))
        return {
            "r2": float(m.r2_score(y, pred)),
            "mae": float(m.mean_absolute_error(y, pred)),
            "mse": mse,
            "rmse": mse**0.5,
            "explained_variance": float(m.explained_variance_score(y, pred)),
        }
    result = {
        "accuracy": float(m.accuracy_score(y, pred)),
        "balanced_accuracy": float(m.balanced_accuracy_score(y, pred)),
        "precision_macro": float(m.precision_score(y, pred, average="macro", zero_division=0)),
        "recall_macro": float(m.recall_score(y, pred, average="macro", zero_division=0)),
        "f1_macro": float(m.f1_score(y, pred, average="macro", zero_division=0)),
    }
    if proba is not None:
        try:
            result["log_loss"] = float(m.log_loss(y, proba))
            if proba.shape[1] == 2:
                result["roc_auc"] = float(m.roc_auc_score(y, proba[:, 1]))
            else:
                result["roc_auc_ovr"] = float(m.roc_auc_score(y, proba, multi_class="ovr"))
        except ValueError:  # labels absent from this sample: leave those two out
            pass
    return result


def _confusion(model: object, y: object, pred: object, displays: list) -> dict:
    import numpy as np
    from sklearn.metrics import confusion_matrix

    labels = getattr(model, "classes_", None)
    if labels is None:
        labels = np.unique(np.concatenate([np.asarray(y), np.asarray(pred)]))
    matrix = confusion_matrix(y, pred, labels=labels)
    plain = [
        v if isinstance(v, (str, int, float, bool)) else str(v)  # as JSON: plain scalars
        for v in np.asarray(labels).tolist()
    ]
    out = {"labels": plain, "confusion_matrix": [[int(n) for n in row] for row in matrix.tolist()]}
    try:
        from sklearn.metrics import ConfusionMatrixDisplay

        plot = ConfusionMatrixDisplay(matrix, display_labels=labels).plot(colorbar=False)
        out["confusion_matrix_png"] = _figure_png(plot.figure_)
        import matplotlib.pyplot as plt

        plt.close("all")
    except ModuleNotFoundError:  # no matplotlib in the image: the table is enough
        pass
    return out


# --------------------------------------------------------------------------- result


def _missing(exc: ModuleNotFoundError, what: str, tb: object = None) -> dict:
    name = exc.name or str(exc)
    result = _error(exc, tb)
    result["evalue"] = (
        f"the image lacks the Python library {name.split('.')[0]!r} needed {what} ({exc})"
    )
    result["missing_module"] = name
    return result


def _error(exc: BaseException, tb: object) -> dict:
    frames = tb
    while frames is not None and frames.tb_frame.f_code.co_filename != CELL:
        frames = frames.tb_next
    if frames is None:  # not raised by the cell itself: keep all but the runner's entry
        frames = tb.tb_next if tb is not None and tb.tb_next is not None else tb
    text = "".join(traceback.format_exception(type(exc), exc, frames))
    return {
        "ok": False,
        "ename": type(exc).__name__,
        "evalue": str(exc),
        "traceback": text,
        "missing_module": None,
    }


def _write(document: dict, values: dict | None = None) -> int:
    """Write the result document (JSON) and, for a job that returns Python values, the
    values file (cloudpickle); exit status 0 when the job succeeded."""
    sys.stdout.flush()
    sys.stderr.flush()
    files = _workdir_changes()
    if values:
        try:
            files[VALUES] = _pickler.dumps(values)
        except Exception as exc:  # an output that cannot travel
            document = _error(TypeError(f"the job's result cannot be pickled: {exc}"), None)
        else:
            document["values"] = sorted(values)
    try:
        files[RESULT] = json.dumps(document, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:  # a field that is not plain data
        files.pop(VALUES, None)
        document = _error(TypeError(f"the job's result cannot be written as JSON: {exc}"), None)
        files[RESULT] = json.dumps(document).encode()
    if _LOG_TOKEN:  # the job folder is read-only (a Secret volume): frame it into the log
        _to_log(files)
        return 0 if document.get("ok") else 1
    for path in sorted(files, key=lambda p: p == RESULT):  # the document last: it says "done"
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(files[path])
        os.replace(tmp, path)
    return 0 if document.get("ok") else 1


# --------------------------------------------------------------------------- workdir


def _unpack_workdir() -> None:
    """Unpack the copy of the caller's working folder (if the job has one) and go there."""
    if not os.path.exists(WORKDIR_INFO):
        return
    with open(WORKDIR_INFO) as f:
        path = json.load(f)["path"]
    target = path
    try:
        os.makedirs(target, exist_ok=True)
        writable = os.access(target, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if not writable:  # say, /home/alice on an image whose user owns only its own HOME
        target = SCRATCH + path
        os.makedirs(target, mode=0o700, exist_ok=True)
    digests = {}
    with tarfile.open(WORKDIR_ARCHIVE) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or member.name.startswith("/") or ".." in parts:
                continue  # the service packs plain relative files only: nothing else is taken
            data = tar.extractfile(member).read()
            dest = os.path.join(target, member.name)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as f:
                f.write(data)
            digests[member.name] = hashlib.sha256(data).hexdigest()
    _unlink(WORKDIR_ARCHIVE)
    os.chdir(target)
    _WORKDIR[:] = [target, digests]


def _workdir_changes() -> dict:
    """The regular files created or changed under the working folder's copy, by their
    path under ``workdir/`` in the job folder (symlinks and other files are left out)."""
    if not _WORKDIR:
        return {}
    base, digests = _WORKDIR
    out = {}
    for here, dirs, names in os.walk(base):  # does not follow symlinked folders
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(here, name)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:  # removed meanwhile, or made unreadable by the job
                continue
            rel = os.path.relpath(path, base)
            if digests.get(rel) != hashlib.sha256(data).hexdigest():
                out[os.path.join(WORKDIR_BACK, rel)] = data
    return out


def _to_log(files: dict) -> None:
    out = [f"<<dss-files:{_LOG_TOKEN}>>\n".encode()]
    for path, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        out.append(f"# {len(data)} {digest} {urllib.parse.quote(path)}\n".encode())
        out.append(base64.encodebytes(data))
    out.append(f"<<dss-files-end:{_LOG_TOKEN}>>\n".encode())
    stream = sys.__stdout__.buffer
    stream.write(b"".join(out))
    stream.flush()


def frame_after(argv: list) -> int:
    """``--frame DIR -- COMMAND...``: run COMMAND, then frame the files it left under DIR."""
    if len(argv) < 4 or argv[0] != "--frame" or argv[2] != "--":
        print("usage: runner.py --frame DIR -- COMMAND...", file=sys.stderr)
        return 2
    folder, command = argv[1], argv[3:]
    os.makedirs(folder, mode=0o700, exist_ok=True)
    sys.stdout.flush()
    try:
        child = subprocess.Popen(command)  # the token was taken out of the environment
    except OSError as exc:
        print(f"dss-containers: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        code = 127
    else:  # as PID 1 this process ignores SIGTERM unless it handles it: pass it on
        signal.signal(signal.SIGTERM, lambda signum, _frame: child.send_signal(signum))
        code = child.wait()
    if code < 0:  # killed by a signal: report it as a shell would
        code = 128 - code
    if _LOG_TOKEN:
        files = {}
        for parent, _dirs, names in os.walk(folder):
            for name in sorted(names):
                path = os.path.join(parent, name)
                with open(path, "rb") as f:
                    files[os.path.join(JOB_DIR, os.path.relpath(path, folder))] = f.read()
        _to_log(files)
    return code


def wait_for_payload() -> int:
    """``--wait``: block until the payload is in the job folder, then run the job."""
    go = os.path.join(JOB_DIR, ".go")
    _unlink(go)
    os.mkfifo(go, 0o600)
    signal.signal(signal.SIGTERM, _cancelled)  # a drained pool's runner exits at once
    with open(go, "rb") as pipe:  # blocks until the service opens it for writing
        started = pipe.read(1)
    _unlink(go)
    if not started:  # opened and closed without a word: no job came
        return 3
    return main()


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--frame"]:
        sys.exit(frame_after(sys.argv[1:]))
    sys.exit(wait_for_payload() if sys.argv[1:2] == ["--wait"] else main())
