"""Fuzzing the config file loader: any document is either a config or a ConfigError.

Hypothesis builds documents shaped like config files (the real keys, with random types,
names and values, metacharacters included) and plain random text. ``parse_config`` and
``load_config`` must return, or raise :class:`ConfigError` whose every line starts with
the file name: never another exception, never a traceback for the user to decode.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_dss_containers.config import ConfigError, ConfigFile, load_config, parse_config

SOURCE = "fuzz.yaml"
FUZZ = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)

# --------------------------------------------------------------------------- strategies

METACHARS = ";|&$`\\\"'\n\t{}[]#*!%@:/\x00 ..~"
nasty_text = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from(METACHARS), max_size=12
)
name = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}\Z") | nasty_text
size = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.from_regex(r"\A[0-9]{1,400}(\.[0-9]{1,3})?\s?[kKmMgGtTbB]?[iI]?[bB]?\Z"),
    nasty_text,
)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
    size,
)
anything = st.recursive(
    scalar,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.one_of(nasty_text, st.integers()), inner, max_size=3)
    ),
    max_leaves=8,
)


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the right shape, sometimes anything at all."""
    return st.one_of(strategy, strategy, strategy, anything)


resources = st.fixed_dictionaries(
    {},
    optional={
        "memory": maybe(size),
        "cpus": maybe(st.floats(allow_nan=True) | st.integers()),
        "pids": maybe(st.integers(min_value=-(2**70), max_value=2**70)),
        "shm_size": maybe(size),
    },
)
docker = st.fixed_dictionaries(
    {},
    optional={
        "host": maybe(st.sampled_from(["unix:///x.sock", "tcp://127.0.0.1:1", "ssh://a@b"])),
        "runtime": maybe(nasty_text),
        "gpus": maybe(st.sampled_from(["all", 1, ["0", "1"]])),
        "network": maybe(nasty_text),
        "user": maybe(st.sampled_from(["1000", "1000:1000", "root", "0"])),
        "resources": maybe(resources),
        "mounts": maybe(
            st.lists(
                st.fixed_dictionaries(
                    {"source": maybe(nasty_text), "target": maybe(nasty_text)},
                    optional={"read_only": maybe(st.booleans()), "type": maybe(nasty_text)},
                ),
                max_size=2,
            )
        ),
        "tls": maybe(st.fixed_dictionaries({}, optional={"verify": maybe(st.booleans())})),
    },
)
quantities = st.dictionaries(nasty_text, maybe(size), max_size=2)
kubernetes = st.fixed_dictionaries(
    {},
    optional={
        "namespace": maybe(st.sampled_from(["dss-${user}", "Bad_NS", "../etc", "a" * 80])),
        "context": maybe(nasty_text),
        "resources": maybe(
            st.fixed_dictionaries({}, optional={"requests": quantities, "limits": quantities})
        ),
        "node_selector": maybe(st.dictionaries(nasty_text, nasty_text, max_size=2)),
        "shm_size": maybe(size),
        "labels": maybe(st.dictionaries(nasty_text, nasty_text, max_size=2)),
        "pod_patch": anything,
    },
)
env = st.dictionaries(
    st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,8}\Z") | nasty_text, maybe(scalar), max_size=3
)
execution_config = st.fixed_dictionaries(
    {
        "backend": maybe(st.sampled_from(["docker", "kubernetes", "podman", ""])),
        "image": maybe(st.sampled_from(["default", "python:3.12-slim", "nope", "a/b@sha256:x"])),
    },
    optional={
        "description": maybe(nasty_text),
        "registry": maybe(nasty_text),
        "env": maybe(env),
        "permissions": maybe(
            st.fixed_dictionaries(
                {}, optional={"groups": maybe(st.lists(name, max_size=2)), "users": anything}
            )
        ),
        "docker": maybe(docker),
        "kubernetes": maybe(kubernetes),
        "interrupt_mode": maybe(st.sampled_from(["signal", "message", "x"])),
        "warm_pool": maybe(
            st.fixed_dictionaries({}, optional={"size": anything, "jobs": anything})
        ),
    },
)
base_image = st.fixed_dictionaries(
    {},
    optional={
        "from": maybe(nasty_text),
        "bootstrap": maybe(st.sampled_from(["debian", "alpine"])),
        "with_r": maybe(st.booleans()),
        "with_cuda": maybe(st.booleans()),
        "system_packages": maybe(st.lists(nasty_text, max_size=2)),
        "dockerfile_append": maybe(nasty_text),
    },
)
code_env = st.fixed_dictionaries(
    {},
    optional={
        "packages": maybe(st.lists(nasty_text, max_size=2)),
        "available_for": maybe(st.just("all") | st.lists(name, max_size=2)),
    },
)
config_document = st.fixed_dictionaries(
    {},
    optional={
        "execution_configs": maybe(st.dictionaries(name, maybe(execution_config), max_size=3)),
        "base_images": maybe(st.dictionaries(name, maybe(base_image), max_size=2)),
        "code_envs": maybe(st.dictionaries(name, maybe(code_env), max_size=2)),
        "groups": maybe(st.dictionaries(nasty_text, st.lists(name, max_size=2), max_size=2)),
        "defaults": maybe(
            st.fixed_dictionaries({}, optional={"execution_config": name, "debian_suite": name})
        ),
    },
)


#: errors about the document as a whole name no place inside it
WHOLE_DOCUMENT = ("expected a mapping at the top", "unknown key ")
YAML_PLACE = re.compile(r"line (\d+), column (\d+): invalid YAML: \S")
UNREAD = object()  # the document could not be read (invalid YAML)


def names_a_place(rest: str, document: Any) -> bool:
    """``rest`` (a line of an error, after the file name) starts with a place that exists in
    ``document``, then ``:``: keys (``a.b``, ``a.'odd key'``, ``a[3]`` for a non-string key)
    and list indices (``[0]``) that resolve there, the last step possibly a key the document
    lacks (a required one)."""

    def walk(rest: str, node: Any, first: bool) -> bool:
        if rest.startswith(":"):
            return True
        if isinstance(node, list):
            m = re.match(r"\[(\d+)\]", rest)
            return (
                bool(m) and int(m[1]) < len(node) and walk(rest[m.end() :], node[int(m[1])], False)
            )
        if isinstance(node, dict):
            sep = "" if first else "."
            for key, value in node.items():
                forms = [f"[{key}]", f"[{key!r}]"]
                forms += [sep + key, sep + repr(key)] if isinstance(key, str) else []
                if any(rest.startswith(f) and walk(rest[len(f) :], value, False) for f in forms):
                    return True
            return bool(re.match(re.escape(sep) + r"[A-Za-z_][A-Za-z0-9_]*:", rest))
        return False

    return walk(rest, document, True)


def assert_clear(error: ConfigError, source: str, document: Any = UNREAD, text: str = "") -> None:
    """Every line of the error (one per problem) names the file, then the place: a path that
    exists in the document, or the YAML line and column (within the text), or says the
    whole document is wrong. Guards against errors that name no file or a wrong place."""
    lines = str(error).split("\n")
    assert lines, str(error)
    for line in lines:
        assert line.startswith(f"{source}: "), str(error)
        rest = line[len(source) + 2 :]
        if m := YAML_PLACE.match(rest):
            assert 1 <= int(m[1]) <= text.count("\n") + 2, line
        elif rest.startswith(WHOLE_DOCUMENT):
            assert not isinstance(document, dict) or rest.startswith("unknown key"), line
        else:
            assert document is not UNREAD and names_a_place(rest, document), line


# --------------------------------------------------------------------------- properties


@FUZZ
@given(document=config_document)
def test_config_shaped_documents_load_or_say_why(document):
    try:
        result = parse_config(document, SOURCE)
    except ConfigError as exc:
        assert_clear(exc, SOURCE, document)
    else:
        assert isinstance(result, ConfigFile)


@FUZZ
@given(document=anything)
def test_any_document_loads_or_says_why(document):
    try:
        parse_config(document, SOURCE)
    except ConfigError as exc:
        assert_clear(exc, SOURCE, document)


_FOLDER = Path(tempfile.mkdtemp(prefix="dss-fuzz-"))


def _load_text(text: str) -> None:
    path = _FOLDER / "dss_containers.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ConfigError as exc:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError:
            document = UNREAD
        assert_clear(exc, str(path), document, text)


@FUZZ
@given(document=config_document)
def test_config_files_written_as_yaml_load_or_say_why(document):
    _load_text(yaml.safe_dump(document, allow_unicode=True))


yaml_text = st.lists(
    st.sampled_from(
        [
            "execution_configs:",
            "  a:",
            "    backend: docker",
            "    image: default",
            "- x",
            "&a [*a]",
            "!!python/object:os.system",
            "key: key: v",
            "a: 1\na: 2",
            "\t",
            "{",
            "]",
            "? x",
            "%YAML 1.1",
            "---",
            "...",
            "'",
            '"\\x',
            "!!binary zz",
            "<<: *nope",
        ]
    )
    | nasty_text,
    max_size=6,
).map("\n".join)


@FUZZ
@given(text=yaml_text)
def test_random_yaml_text_loads_or_says_why(text):
    _load_text(text)


# --------------------------------------------------------------------------- named cases


def _config(**fields) -> dict:
    return {"execution_configs": {"c": {"backend": "docker", "image": "default", **fields}}}


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({"execution_configs": {"../etc": {"backend": "docker", "image": "default"}}}, "../etc"),
        ({"execution_configs": {"a/b": {"backend": "docker", "image": "default"}}}, "a/b"),
        ({"base_images": {"x;rm -rf /": {"bootstrap": "debian"}}}, "x;rm -rf /"),
        (_config(env={"A-B": "1"}), "env"),
        (_config(env={"1A": "1"}), "env"),
        (_config(env={"A=B": "1"}), "env"),
        (_config(env={"": "1"}), "env"),
        (_config(docker={"resources": {"memory": "1025Ti"}}), "docker.resources.memory"),
        (_config(docker={"resources": {"memory": "9" * 400}}), "docker.resources.memory"),
        (_config(docker={"resources": {"cpus": 5000}}), "docker.resources.cpus"),
        (_config(docker={"resources": {"pids": 10**9}}), "docker.resources.pids"),
        (_config(docker={"resources": {"shm_size": "-1g"}}), "docker.resources.shm_size"),
        (_config(docker={"user": "0; id"}), "docker.user"),
        (_config(docker={"mounts": [{"source": "/", "target": "rel/ative"}]}), "target"),
        ({"groups": {"alice\nbob": 1}}, "'alice\\nbob'"),
    ],
)
def test_bad_names_and_absurd_resources_are_refused_with_the_place(document, where):
    with pytest.raises(ConfigError) as caught:
        parse_config(document, SOURCE)
    assert_clear(caught.value, SOURCE, document)
    assert where in str(caught.value)


@pytest.fixture(scope="module")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_dss_containers")
    ip.user_ns.update(model=object(), X=[[1]], y=[1])
    return ip


@pytest.mark.parametrize(
    ("kind", "line", "message"),
    [
        ("cell", "../etc/passwd", "no execution configuration named '../etc/passwd'"),
        ("cell", "'local; rm -rf /'", "no execution configuration named \"'local; rm -rf /'\""),
        ("cell", "local --env ../../x", "no code environment named '../../x'"),
        ("cell", "local --in 'a;b'", "not defined here: 'a;b'"),
        ("cell", "local --lang sh", "invalid choice: 'sh'"),
        ("cell", "{a: [b]}", "unrecognized arguments"),
        ("line", "container_model score local model X --chunk-size abc", "'abc'"),
        ("line", "container_model score local model X --chunk-size -5", "'-5'"),
        ("line", "container_model train 'local", "No closing quotation"),
        ("line", "container_model fly local model X y", "usage: %container_model"),
        ("line", "container_logs ../x", "no job '../x'"),
        ("line", "container_cancel $(reboot)", "no job '$(reboot)'"),
    ],
)
def test_magic_arguments_with_metacharacters_are_refused_with_a_reason(shell, kind, line, message):
    """Refused before any container starts, with a message naming the bad argument."""
    with pytest.raises(Exception) as caught:  # the type varies; the text tells
        if kind == "cell":
            shell.run_cell_magic("container", line, "x = 1")
        else:
            name, _, rest = line.partition(" ")
            shell.run_line_magic(name, rest)
    assert message in str(caught.value)
    assert "Traceback" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("groups: &g {alice: *g}", "line 1, column 9: invalid YAML: found unconstructable"),
        ("groups: &g [*g]", "groups[0]: invalid YAML: an alias refers to a node"),
        ("a: &x [1, *x]", "a[1]: invalid YAML: an alias refers to a node"),
        ("a: 1\nb: x\x1fy\n", "line 2, column 5: invalid YAML: character U+001F"),
        ("a: 1\na: 2\n", "duplicate key 'a'"),
    ],
)
def test_yaml_that_cannot_be_a_config_is_refused_with_the_place(text, where):
    path = _FOLDER / "dss_containers.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        document = UNREAD
    assert_clear(caught.value, str(path), document, text)
    assert where in str(caught.value)
