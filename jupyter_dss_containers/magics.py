"""IPython magics: ``%%container``, ``%container_model``, ``%container_deploy`` and the job
listing/control lines.

They are thin: argument parsing and display here, everything else in
:mod:`jupyter_dss_containers.jobs`, so a script gets the same behaviour without them.
"""

from __future__ import annotations

import shlex
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from . import jobs


def _names(value: str | None) -> list[str]:
    return [n.strip() for n in (value or "").split(",") if n.strip()]


@magics_class
class ContainerMagics(Magics):
    """Run cells, models and recipes in containers from execution configurations."""

    @magic_arguments()
    @argument("config", help="execution configuration to run the cell in")
    @argument("--env", default=None, help="code environment")
    @argument("--in", dest="inputs", default=None, help="variables to send, e.g. a,b")
    @argument("--out", dest="outputs", default=None, help="variables to bring back, e.g. c")
    @argument("--lang", default="python", choices=["python", "r"], help="language of the cell")
    @argument("--detach", action="store_true", help="return the job id at once")
    @cell_magic
    def container(self, line: str, cell: str) -> str | None:
        """Run the cell in a container; ``--in`` variables go in, ``--out`` ones come back."""
        args = parse_argstring(self.container, line)
        ns = self.shell.user_ns
        missing = [n for n in _names(args.inputs) if n not in ns]
        if missing:
            raise NameError(f"%%container --in: not defined here: {', '.join(missing)}")
        job = jobs.submit(
            args.config,
            cell,
            inputs={n: ns[n] for n in _names(args.inputs)},
            outputs=_names(args.outputs),
            lang=args.lang,
            env=args.env,
        )
        if job.message:
            print(f"job {job.id}: {job.message}")
        if args.detach:
            print(f"job {job.id} runs detached; %container_result {job.id} fetches its result")
            return job.id
        jobs.wait(job.id, phases=True)
        self._deliver(jobs.result(job.id))
        return None

    def _deliver(self, result: dict[str, Any]) -> None:
        for bundle in result.get("displays", []):
            display(bundle, raw=True)  # PNG is base64 text already, as Jupyter wants it
        self.shell.user_ns.update(result.get("outputs", {}))

    @line_magic
    def container_model(self, line: str) -> Any:
        """``%container_model train|retrain|score|evaluate CONFIG MODEL X [y] [--env E]
        [--task T] [--chunk-size N]``: names are variables of the notebook; returns the
        result (``train``/``retrain`` return the fitted model's result, ``score`` the
        predictions, ``evaluate`` the metrics table)."""
        try:
            words = shlex.split(line)
        except ValueError as exc:  # an unbalanced quote
            raise ValueError(f"%container_model: {exc} in {line!r}") from None
        options: dict[str, str] = {}
        positional = []
        it = iter(words)
        for word in it:
            if word.startswith("--"):
                options[word[2:].replace("-", "_")] = next(it, "")
            else:
                positional.append(word)
        usage = "usage: %container_model train|retrain|score|evaluate CONFIG MODEL X [y]"
        if len(positional) < 4:
            raise ValueError(usage)
        action, config, *names = positional
        ns = self.shell.user_ns
        missing = [n for n in names if n not in ns]
        if missing:
            raise NameError(f"%container_model: not defined here: {', '.join(missing)}")
        values = [ns[n] for n in names]
        env = options.get("env")
        if action in ("train", "retrain") and len(values) == 3:
            call = jobs.train if action == "train" else jobs.retrain
            return call(config, *values, task=options.get("task"), env=env)
        chunk_text = options.get("chunk_size", "10000")
        if not chunk_text.isdigit() or int(chunk_text) == 0:
            raise ValueError(
                f"%container_model --chunk-size: expected a number of rows > 0, got {chunk_text!r}"
            )
        chunk = int(chunk_text)
        if action == "score" and len(values) == 2:
            return jobs.score(config, *values, chunk_size=chunk, env=env)
        if action == "evaluate" and len(values) == 3:
            return jobs.evaluate(
                config, *values, task=options.get("task"), chunk_size=chunk, env=env
            )
        raise ValueError(usage)

    @magic_arguments()
    @argument("name", help="the service's name")
    @argument("model", help="the notebook variable holding the fitted model")
    @argument("config", help="execution configuration to serve it on")
    @argument("--replicas", type=int, default=1, help="number of replica containers")
    @argument("--version", default="v1", help="the version's name")
    @line_magic
    def container_deploy(self, line: str) -> Any:
        """Serve a fitted model as a scoring API; prints its URL and API key (shown once)."""
        from . import services

        args = parse_argstring(self.container_deploy, line)
        if args.model not in self.shell.user_ns:
            raise NameError(f"%container_deploy: not defined here: {args.model}")
        row = services.deploy(
            self.shell.user_ns[args.model], args.name, args.config, args.replicas, args.version
        )
        print(f"service {row['name']} serves at {row['url']} (API key: {row['api_key']})")
        return row

    @line_magic
    def container_jobs(self, line: str) -> Any:
        """This kernel's jobs as a table."""
        rows = jobs.jobs()
        try:
            import pandas as pd
        except ModuleNotFoundError:
            return rows
        columns = ["id", "name", "config", "state", "message", "exit_code"]
        return pd.DataFrame(rows, columns=columns)

    @line_magic
    def container_logs(self, line: str) -> None:
        """The output of a job so far."""
        print(jobs.logs(line.strip()), end="")

    @line_magic
    def container_cancel(self, line: str) -> None:
        job = jobs.cancel(line.strip())
        print(f"job {job.id}: {job.state}")

    @line_magic
    def container_result(self, line: str) -> Any:
        """Wait for a (detached) job, show its displays and put its ``--out`` variables here."""
        job_id = line.strip()
        jobs.wait(job_id)
        result = jobs.result(job_id)
        if isinstance(result, dict) and "outputs" in result:
            self._deliver(result)
            return None
        return result


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(ContainerMagics)
