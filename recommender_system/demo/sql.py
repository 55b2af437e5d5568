"""A small reader of PostgreSQL ``INSERT INTO ... (columns) VALUES (...), (...);`` dumps.

It understands what such dumps hold: quoted strings with ``''`` escapes, quoted identifiers, ``NULL``, booleans,
integers and decimals, ``ARRAY[...]`` and ``'{...}'`` array literals (``parse_array_literal``), ``::type`` casts
and comments. Other statements (``SET``, ``SELECT setval(...)``, ...) are skipped. Rows that follow a statement's
closing ``;`` without a new ``INSERT`` (a stray ``(...);`` line, which psql rejects) are returned with
``stray=True`` so that the caller decides what they meant.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<string>'(?:[^']|'')*')
    | (?P<number>-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<qident>"(?:[^"]|"")*")
    | (?P<word>[A-Za-z_][A-Za-z_0-9$]*)
    | (?P<cast>::)
    | (?P<punct>[(),;\[\].])
    | (?P<other>\S)
    )
    """,
    re.S | re.X,
)
_INTEGER = re.compile(r"-?\d+")


class SqlSyntaxError(ValueError):
    """The text is not the kind of dump this reader understands; the message says where."""


@dataclass
class InsertStatement:
    table: str
    """Unqualified table name (``public."order"`` -> ``order``)."""
    columns: list[str]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    stray: bool = False
    """Rows found after the statement's ``;`` without an ``INSERT`` of their own."""

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def tokenize(text: str) -> Iterator[tuple[str, Any, int]]:
    """``(kind, value, offset)`` for every token but white space and comments. Strings and quoted identifiers
    come unquoted; numbers as text (the parser decides int or float); any other character is an ``other`` token
    (found in statements the parser skips, an error anywhere else)."""
    for found in _TOKEN.finditer(text):  # ``other`` takes any non-space character: nothing is skipped unseen
        kind = found.lastgroup
        value = found.group(kind)  # type: ignore[arg-type]
        if kind == "string":
            yield "string", value[1:-1].replace("''", "'"), found.start(kind)  # type: ignore[arg-type]
        elif kind == "qident":
            yield "ident", value[1:-1].replace('""', '"'), found.start(kind)  # type: ignore[arg-type]
        elif kind != "comment":
            yield kind, value, found.start(kind)  # type: ignore[misc,arg-type]


def parse_array_literal(text: str) -> list[str | None]:
    """A one-dimensional PostgreSQL array literal: ``'{a,b,"c,d",NULL}'`` -> ``['a', 'b', 'c,d', None]``."""
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise SqlSyntaxError(f"not an array literal: {text[:40]!r}")
    body = text[1:-1]
    items: list[str | None] = []
    i, n = 0, len(body)
    if not body.strip():
        return items
    while i <= n:
        while i < n and body[i] == " ":
            i += 1
        if i < n and body[i] == '"':
            i += 1
            chars = []
            while i < n and body[i] != '"':
                if body[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(body[i])
                i += 1
            i += 1  # closing quote
            items.append("".join(chars))
            while i < n and body[i] != ",":
                i += 1
        else:
            comma = body.find(",", i)
            comma = n if comma < 0 else comma
            raw = body[i:comma].strip()
            items.append(None if raw.upper() == "NULL" else raw)
            i = comma
        i += 1  # the comma
    return items


class _Parser:
    def __init__(self, text: str) -> None:
        self._tokens = tokenize(text)
        self._next: tuple[str, Any, int] | None = None
        self._advance()

    def _advance(self) -> tuple[str, Any, int] | None:
        current = self._next
        self._next = next(self._tokens, None)
        return current

    def _peek(self) -> tuple[str, Any, int] | None:
        return self._next

    def _expect(self, kind: str, value: str | None = None) -> Any:
        token = self._advance()
        if token is None:
            raise SqlSyntaxError(f"unexpected end of text, expected {value or kind}")
        if token[0] != kind or (value is not None and str(token[1]).upper() != value.upper()):
            raise SqlSyntaxError(f"expected {value or kind} at offset {token[2]}, found {token[1]!r}")
        return token[1]

    def _at(self, kind: str, value: str | None = None) -> bool:
        token = self._next
        return token is not None and token[0] == kind and (value is None or str(token[1]).upper() == value.upper())

    def statements(self) -> Iterator[InsertStatement]:
        last: InsertStatement | None = None
        while self._next is not None:
            if self._at("word", "INSERT"):
                last = self._insert()
                yield last
            elif self._at("punct", "(") and last is not None:
                stray = InsertStatement(last.table, last.columns, stray=True)
                self._rows(stray)
                yield stray
            elif self._at("punct", ";"):
                self._advance()
            else:
                self._skip_statement()

    def _skip_statement(self) -> None:
        depth = 0
        while self._next is not None:
            kind, value, _ = self._advance()  # type: ignore[misc]
            if kind == "punct":
                if value == "(":
                    depth += 1
                elif value == ")":
                    depth -= 1
                elif value == ";" and depth <= 0:
                    return

    def _insert(self) -> InsertStatement:
        self._expect("word", "INSERT")
        self._expect("word", "INTO")
        name = self._name()
        self._expect("punct", "(")
        columns = [self._name_part()]
        while self._at("punct", ","):
            self._advance()
            columns.append(self._name_part())
        self._expect("punct", ")")
        self._expect("word", "VALUES")
        statement = InsertStatement(name, columns)
        self._rows(statement)
        return statement

    def _name_part(self) -> str:
        token = self._advance()
        if token is None or token[0] not in ("word", "ident"):
            raise SqlSyntaxError(f"expected a name at offset {token[2] if token else 'end'}")
        return str(token[1])

    def _name(self) -> str:
        name = self._name_part()
        while self._at("punct", "."):
            self._advance()
            name = self._name_part()
        return name

    def _rows(self, statement: InsertStatement) -> None:
        width = len(statement.columns)
        while True:
            row = self._row()
            if len(row) != width:
                raise SqlSyntaxError(f"{statement.table}: a row has {len(row)} values for {width} columns")
            statement.rows.append(row)
            if self._at("punct", ","):
                self._advance()
                continue
            if self._next is None:
                return
            self._expect("punct", ";")
            return

    def _row(self) -> tuple[Any, ...]:
        self._expect("punct", "(")
        values = [self._value()]
        while self._at("punct", ","):
            self._advance()
            values.append(self._value())
        self._expect("punct", ")")
        return tuple(values)

    def _value(self) -> Any:
        token = self._advance()
        if token is None:
            raise SqlSyntaxError("unexpected end of text in a value")
        kind, raw, offset = token
        if kind == "string":
            value: Any = raw
        elif kind == "number":
            value = int(raw) if _INTEGER.fullmatch(raw) else float(raw)
        elif kind == "word" and raw.upper() == "NULL":
            value = None
        elif kind == "word" and raw.upper() in ("TRUE", "FALSE"):
            value = raw.upper() == "TRUE"
        elif kind == "word" and raw.upper() == "ARRAY":
            self._expect("punct", "[")
            value = []
            if not self._at("punct", "]"):
                value.append(self._value())
                while self._at("punct", ","):
                    self._advance()
                    value.append(self._value())
            self._expect("punct", "]")
        else:
            raise SqlSyntaxError(f"unsupported value {raw!r} at offset {offset}")
        if self._at("cast"):
            self._advance()
            type_name = self._name()
            is_array = False
            if self._at("punct", "("):  # varchar(13)
                self._skip_parenthesised()
            while self._at("punct", "["):
                self._advance()
                self._expect("punct", "]")
                is_array = True
            if is_array and isinstance(value, str):
                value = parse_array_literal(value)
            elif type_name.lower() == "boolean" and isinstance(value, str):
                value = value.lower() in ("t", "true", "1", "y", "yes", "on")
        return value

    def _skip_parenthesised(self) -> None:
        self._expect("punct", "(")
        depth = 1
        while depth:
            token = self._advance()
            if token is None:
                raise SqlSyntaxError("unexpected end of text in a type")
            if token[1] == "(":
                depth += 1
            elif token[1] == ")":
                depth -= 1


def parse_inserts(text: str) -> list[InsertStatement]:
    """Every ``INSERT`` statement of a dump (and any stray rows), in file order."""
    return list(_Parser(text).statements())
