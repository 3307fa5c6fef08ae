"""A small evaluator of Go's text/template, for the subset Ollama TEMPLATEs use.

Supported: text and actions with ``{{-`` / ``-}}`` trimming; ``if``/``else``/``end``;
``range PIPE`` and ``range $i, $v := PIPE``; ``$x := PIPE``; operands ``.``, ``.A.B``,
``$``, ``$x.A``, string and integer literals, ``( ... )``; the built-ins ``and``,
``or`` (short-circuit, returning an operand), ``not``, ``eq``, ``ne``, ``len``,
``slice``, and Ollama's ``json``. Truth and printing follow Go: empty strings, lists,
maps, 0, false and nil are false; values with a ``go_string`` method print through it
(as Go's ``fmt`` uses ``String()``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+)|(?P<decl>:=)|(?P<comma>,)'
    r"|(?P<lp>\()|(?P<rp>\))|(?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)"
    r"|(?P<field>(?:\.[A-Za-z0-9_]+)+|\.)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*))"
)


class TemplateError(Exception):
    """The template uses something this evaluator does not know, or is malformed."""


class GoJSON:
    """A value Go prints as ``json.Marshal`` would: compact, ``<>&`` escaped."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def go_string(self) -> str:
        text = json.dumps(self.value, ensure_ascii=False, separators=(",", ":"))
        for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            text = text.replace(char, escaped)
        return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


@dataclass
class _Node:
    kind: str  # text | output | if | range | decl
    text: str = ""
    pipe: list[Any] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _lex(source: str) -> list[tuple[str, str]]:
    pieces: list[tuple[str, str]] = []
    pos = 0
    for found in _ACTION.finditer(source):
        text = source[pos : found.start()]
        if found.group(1):
            text = text.rstrip(" \t\r\n")
        pieces.append(("text", text))
        pieces.append(("action", found.group(2).strip()))
        pos = found.end()
        if found.group(3):
            rest = source[pos:]
            pos += len(rest) - len(rest.lstrip(" \t\r\n"))
    pieces.append(("text", source[pos:]))
    return pieces


def _tokens(action: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while action[pos:].strip():
        found = _TOKEN.match(action, pos)
        if not found or found.end() == pos:
            raise TemplateError(f"cannot read {action[pos:]!r}")
        kind = found.lastgroup or ""
        out.append((kind, found.group(kind)))
        pos = found.end()
    return out


def _parse_pipe(tokens: list[tuple[str, str]]) -> list[Any]:
    """A command: a list of operands, each a token or a nested ``("cmd", [...])``."""
    stack: list[list[Any]] = [[]]
    for kind, value in tokens:
        if kind == "lp":
            stack.append([])
        elif kind == "rp":
            if len(stack) == 1:
                raise TemplateError("unbalanced parentheses")
            inner = stack.pop()
            stack[-1].append(("cmd", inner))
        else:
            stack[-1].append((kind, value))
    if len(stack) != 1:
        raise TemplateError("unbalanced parentheses")
    return stack[0]


def parse(source: str) -> list[_Node]:
    """The template as a tree of nodes."""
    root: list[_Node] = []
    stack: list[tuple[_Node | None, list[_Node]]] = [(None, root)]
    for kind, value in _lex(source):
        container = stack[-1][1]
        if kind == "text":
            if value:
                container.append(_Node("text", text=value))
            continue
        words = _tokens(value)
        head = words[0][1] if words and words[0][0] == "ident" else None
        if head == "end":
            if len(stack) == 1:
                raise TemplateError("{{ end }} without a block")
            stack.pop()
        elif head == "else":
            node = stack[-1][0]
            if node is None:
                raise TemplateError("{{ else }} outside a block")
            stack[-1] = (node, node.orelse)
        elif head in ("if", "range"):
            node = _Node(head)
            rest = words[1:]
            if head == "range" and any(k == "decl" for k, _ in rest):
                split = next(i for i, (k, _) in enumerate(rest) if k == "decl")
                node.names = [v for k, v in rest[:split] if k == "var"]
                rest = rest[split + 1 :]
            node.pipe = _parse_pipe(rest)
            container.append(node)
            stack.append((node, node.body))
        elif len(words) > 2 and words[0][0] == "var" and words[1][0] == "decl":
            container.append(_Node("decl", names=[words[0][1]], pipe=_parse_pipe(words[2:])))
        elif head in ("with", "define", "template", "block", "break", "continue"):
            raise TemplateError(f"{{{{ {head} }}}} is not supported here")
        else:
            container.append(_Node("output", pipe=_parse_pipe(words)))
    if len(stack) != 1:
        raise TemplateError("missing {{ end }}")
    return root


def truth(value: Any) -> bool:
    """Go's notion of a true value in ``if``, ``and``, ``or``, ``not``."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, (str, list, tuple, dict)):
        return len(value) > 0
    return True


def printed(value: Any) -> str:
    """How ``{{ value }}`` prints."""
    if hasattr(value, "go_string"):
        return value.go_string()
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _lookup(value: Any, path: list[str]) -> Any:
    for name in path:
        if value is None:
            return None
        value = value.get(name) if isinstance(value, dict) else getattr(value, name, None)
    return value


@dataclass
class _Scope:
    dot: Any
    variables: dict[str, Any]


def _operand(token: tuple[str, Any], scope: _Scope) -> Any:
    kind, value = token
    if kind == "cmd":
        return _command(value, scope)
    if kind == "str":
        return json.loads(value)
    if kind == "num":
        return int(value)
    if kind == "field":
        return scope.dot if value == "." else _lookup(scope.dot, value[1:].split("."))
    if kind == "var":
        name, *path = value.split(".")
        if name not in scope.variables:
            raise TemplateError(f"undefined variable {name}")
        return _lookup(scope.variables[name], path)
    if kind == "ident" and value in ("true", "false"):
        return value == "true"
    if kind == "ident" and value == "nil":
        return None
    raise TemplateError(f"unexpected {value!r}")


def _command(words: list[Any], scope: _Scope) -> Any:
    if not words:
        raise TemplateError("empty command")
    kind, name = words[0]
    if kind != "ident" or name in ("true", "false", "nil"):
        if len(words) != 1:
            raise TemplateError(f"{name!r} is not a function")
        return _operand(words[0], scope)
    args = words[1:]
    if name in ("and", "or"):
        result: Any = None
        for arg in args:
            result = _operand(arg, scope)
            if truth(result) != (name == "and"):
                return result
        return result
    values = [_operand(arg, scope) for arg in args]
    if name == "not":
        return not truth(values[0])
    if name == "eq":
        return any(values[0] == other for other in values[1:])
    if name == "ne":
        return values[0] != values[1]
    if name == "len":
        return len(values[0])
    if name == "slice":
        start = values[1] if len(values) > 1 else 0
        stop = values[2] if len(values) > 2 else len(values[0])
        return values[0][start:stop]
    if name == "json":
        return GoJSON(values[0]).go_string()
    raise TemplateError(f"unknown function {name}")


def _run(nodes: list[_Node], scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "output":
            out.append(printed(_command(node.pipe, scope)))
        elif node.kind == "decl":
            scope.variables[node.names[0]] = _command(node.pipe, scope)
        elif node.kind == "if":
            branch = node.body if truth(_command(node.pipe, scope)) else node.orelse
            _run(branch, _Scope(scope.dot, dict(scope.variables)), out)
        elif node.kind == "range":
            items = _command(node.pipe, scope)
            pairs = list(items.items()) if isinstance(items, dict) else list(enumerate(items or []))
            if not pairs:
                _run(node.orelse, _Scope(scope.dot, dict(scope.variables)), out)
            for key, item in pairs:
                variables = dict(scope.variables)
                if len(node.names) == 2:
                    variables[node.names[0]], variables[node.names[1]] = key, item
                elif len(node.names) == 1:
                    variables[node.names[0]] = item
                _run(node.body, _Scope(item, variables), out)


def execute(source: str, data: Any) -> str:
    """Render ``source`` with ``data`` as ``.`` and ``$``."""
    out: list[str] = []
    _run(parse(source), _Scope(data, {"$": data}), out)
    return "".join(out)
