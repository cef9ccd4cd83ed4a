"""Label and field selectors as the API server parses them, and the label and name rules
it validates objects with. Pure functions; a bad selector raises :class:`SelectorError`,
which the API answers with 400 BadRequest (the message is the API server's).

Label selectors (``k8s.io/apimachinery/pkg/labels``): ``a=1``, ``a==1``, ``a!=1``,
``a in (1,2)``, ``a notin (1,2)``, ``a`` (exists), ``!a`` (does not exist), ``a>1``,
``a<1``, comma-separated (all must hold). ``!=`` and ``notin`` also match objects without
the label. Field selectors: ``f=v``, ``f==v``, ``f!=v`` on the fields each kind supports;
any other field is refused (``field label not supported: spec.x``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")
_NAME_PART = re.compile(rf"^{_NAME}$")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_DNS_LABEL_RE = re.compile(rf"^{_DNS_LABEL}$")

LABEL_VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
NAME_PART_RULE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
SUBDOMAIN_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS_LABEL_RULE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


class SelectorError(ValueError):
    """A selector the API server cannot parse or does not support (400)."""


# --------------------------------------------------------------------------- validation


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label key (``prefix/name``), or None."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return "prefix part must be non-empty"
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"prefix part {SUBDOMAIN_RULE}"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _NAME_PART.match(name):
        return NAME_PART_RULE
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a valid label value, or None."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _LABEL_VALUE.match(value):
        return LABEL_VALUE_RULE
    return None


def labels_problem(labels: dict[str, Any]) -> str | None:
    """The validation error of an object's ``metadata.labels`` (as the API words it)."""
    for key, value in labels.items():
        if not isinstance(value, str):
            return f'metadata.labels: Invalid value: "{key}": label values must be strings'
        if problem := label_key_problem(key):
            return f'metadata.labels: Invalid value: "{key}": {problem}'
        if problem := label_value_problem(value):
            return f'metadata.labels: Invalid value: "{value}": {problem}'
    return None


def name_problem(name: str, dns_label: bool = False) -> str | None:
    """Why ``name`` is not a valid object name (a DNS subdomain; a DNS label for
    namespaces), or None."""
    if not name:
        return "metadata.name: Required value: name or generateName is required"
    limit, pattern, rule = (
        (63, _DNS_LABEL_RE, DNS_LABEL_RULE) if dns_label else (253, _DNS_SUBDOMAIN, SUBDOMAIN_RULE)
    )
    if len(name) > limit:
        return f'metadata.name: Invalid value: "{name}": must be no more than {limit} characters'
    if not pattern.match(name):
        return f'metadata.name: Invalid value: "{name}": {rule}'
    return None


# --------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return has and value in self.values
        if self.op in ("!=", "notin"):
            return not has or value not in self.values
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        try:  # > and <: integers on both sides, else no match
            number = int(value) if value is not None else None
        except ValueError:
            return False
        if number is None:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == ">" else number < bound


_TOKEN = re.compile(r"\s*(!=|==|=|!|>|<|\(|\)|,|[^\s!=<>(),]+)")


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match:  # cannot happen: every character is a token or white space
            raise SelectorError(f"unable to parse requirement: {text[pos:]!r}")
        out.append(match.group(1))
        pos = match.end()
    return out


def parse_labels(selector: str | None) -> list[Requirement]:
    """The requirements of a label selector (all must hold); SelectorError if bad."""
    tokens = _tokens(selector or "")
    requirements: list[Requirement] = []
    i = 0

    def expect(what: str) -> str:
        nonlocal i
        if i >= len(tokens):
            raise SelectorError(f"found '', expected: {what}")
        i += 1
        return tokens[i - 1]

    while i < len(tokens):
        negated = tokens[i] == "!"
        if negated:
            i += 1
        key = expect("identifier")
        if key in ("=", "==", "!=", "(", ")", ",", ">", "<", "!"):
            raise SelectorError(f"found '{key}', expected: identifier")
        if problem := label_key_problem(key):
            raise SelectorError(
                f'unable to parse requirement: key: Invalid value: "{key}": {problem}'
            )
        op = tokens[i] if i < len(tokens) else ","
        if negated:
            if op != ",":
                raise SelectorError(f"found '{op}', expected: ',' or 'end of string'")
            requirements.append(Requirement(key, "!"))
        elif op == ",":
            requirements.append(Requirement(key, "exists"))
        elif op in ("=", "==", "!=", ">", "<"):
            i += 1
            value = tokens[i] if i < len(tokens) and tokens[i] != "," else ""
            if value in ("=", "==", "!=", "(", ")", ">", "<", "!"):
                raise SelectorError(f"found '{value}', expected: identifier for value")
            i += 1 if value else 0
            requirements.append(_requirement(key, "=" if op == "==" else op, (value,)))
        elif op in ("in", "notin"):
            i += 1
            if (opening := expect("'('")) != "(":
                raise SelectorError(f"found '{opening}', expected: '('")
            values: list[str] = []
            while True:
                token = expect("identifier or ')'")
                if token == ")":
                    break
                if token == ",":
                    continue
                if token in ("=", "==", "!=", "(", ">", "<", "!"):
                    raise SelectorError(f"found '{token}', expected: ',' or ')'")
                values.append(token)
            if not values:
                raise SelectorError(
                    "unable to parse requirement: values: Invalid value: []: for 'in', "
                    "'notin' operators, values set can't be empty"
                )
            requirements.append(_requirement(key, op, tuple(values)))
        else:
            raise SelectorError(
                f"found '{op}', expected: in, notin, =, ==, !=, gt, lt, ',' or 'end of string'"
            )
        if i < len(tokens):
            if tokens[i] != ",":
                raise SelectorError(f"found '{tokens[i]}', expected: ',' or 'end of string'")
            i += 1
            if i == len(tokens):
                raise SelectorError("found '', expected: identifier after ','")
    return requirements


def _requirement(key: str, op: str, values: tuple[str, ...]) -> Requirement:
    if op in (">", "<"):
        if not re.fullmatch(r"-?\d+", values[0]):
            raise SelectorError(
                f"unable to parse requirement: values[0]: Invalid value: {values[0]!r}: "
                "for 'Gt', 'Lt' operators, the value must be an integer"
            )
        return Requirement(key, op, values)
    for n, value in enumerate(values):
        if problem := label_value_problem(value):
            raise SelectorError(
                f'unable to parse requirement: values[{n}][{key}]: Invalid value: "{value}": '
                f"{problem}"
            )
    return Requirement(key, op, values)


def label_matcher(selector: str | None) -> Callable[[dict[str, str]], bool]:
    """A test of an object's labels against ``selector`` (SelectorError if bad)."""
    requirements = parse_labels(selector)
    return lambda labels: all(r.matches(labels) for r in requirements)


# --------------------------------------------------------------------------- fields


def _involved(name: str) -> Callable[[dict[str, Any]], str]:
    return lambda o: (o.get("involvedObject") or {}).get(name) or ""


_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
#: kind -> field -> its value in an object (the fields the API server lets one select on)
FIELDS: dict[str, dict[str, Callable[[dict[str, Any]], str]]] = {
    "pods": {
        "spec.nodeName": lambda o: o["spec"].get("nodeName", ""),
        "spec.restartPolicy": lambda o: o["spec"].get("restartPolicy", "Always"),
        "spec.schedulerName": lambda o: o["spec"].get("schedulerName", "default-scheduler"),
        "spec.serviceAccountName": lambda o: o["spec"].get("serviceAccountName", "default"),
        "spec.hostNetwork": lambda o: str(bool(o["spec"].get("hostNetwork"))).lower(),
        "status.phase": lambda o: (o.get("status") or {}).get("phase", ""),
        "status.podIP": lambda o: (o.get("status") or {}).get("podIP", ""),
        "status.nominatedNodeName": lambda o: (o.get("status") or {}).get("nominatedNodeName", ""),
    },
    "secrets": {"type": lambda o: o.get("type", "Opaque")},
    "events": {  # the apiserver's event fields (pkg/registry/core/event/strategy.go)
        **{
            f"involvedObject.{f}": _involved(f)
            for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion")
        },
        "involvedObject.fieldPath": _involved("fieldPath"),
        "reason": lambda o: o.get("reason") or "",
        "reportingComponent": lambda o: o.get("reportingComponent") or "",
        "source": lambda o: (o.get("source") or {}).get("component") or "",
        "type": lambda o: o.get("type") or "",
    },
    "namespaces": {"status.phase": lambda o: (o.get("status") or {}).get("phase", "")},
}


def _field(kind: str, name: str) -> Callable[[dict[str, Any]], str]:
    if name == "metadata.name":
        return lambda o: o["metadata"]["name"]
    if name == "metadata.namespace" and kind != "namespaces":
        return lambda o: o["metadata"].get("namespace", "")
    getter = FIELDS.get(kind, {}).get(name)
    if getter is None:
        raise SelectorError(f"field label not supported: {name}")
    return getter


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], "", False
    for ch in text:
        if escaped:
            current += "\\" + ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current + ("\\" if escaped else ""))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def field_matcher(kind: str, selector: str | None) -> Callable[[dict[str, Any]], bool]:
    """A test of an object against a field selector (SelectorError if bad or unsupported)."""
    terms: list[tuple[Callable[[dict[str, Any]], str], bool, str]] = []
    for term in _split_unescaped(selector or "", ","):
        if not term.strip():
            continue
        match = re.match(r"^([^=!]*?)(!=|==|=)(.*)$", term)
        if match is None:
            raise SelectorError(f"invalid selector: '{selector}'; can't understand '{term}'")
        name, op, value = match.group(1).strip(), match.group(2), match.group(3)
        terms.append((_field(kind, name), op == "!=", _unescape(value)))
    return lambda obj: all((get(obj) == value) != negated for get, negated, value in terms)
