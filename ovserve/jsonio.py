"""JSON text, for request bodies and config.json: orjson for speed, the json module for NaN and Infinity literals."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from .errors import ServingError

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def loads(body: bytes) -> Any:
    """Parse a request body; invalid JSON raises JSON_INVALID with the parser's message and offset
    (docs/apis.md#tfs-rest)."""
    try:
        return orjson.loads(body)  # about 6x faster than json on large numeric bodies
    except orjson.JSONDecodeError as e:
        if "surrogate" in e.msg and "UTF-8" not in e.msg:  # "\ud800": the json module would let it through
            problem = "The surrogate pair in string is invalid."  # rapidjson's words, as OVMS answers
            raise ServingError("JSON_INVALID", f"Error: {problem} Offset: {e.pos}") from None
        # strict JSON only: NaN, Infinity and -Infinity (which TF Serving accepts) need the json module
    try:
        document = json.loads(body.decode("utf-8"))  # strictly: json.loads(bytes) lets bad UTF-8 through as surrogates
    except json.JSONDecodeError as e:
        raise ServingError("JSON_INVALID", f"Error: {e.msg} Offset: {e.pos}") from None
    except UnicodeDecodeError as e:
        raise ServingError("JSON_INVALID", f"Error: Invalid encoding in string. Offset: {e.start}") from None
    except RecursionError:
        raise ServingError("JSON_INVALID", "Error: too deeply nested") from None
    if _SURROGATE_ESCAPE.search(body) and lone_surrogate(document) is not None:  # a NaN beside a "\ud800"
        raise ServingError("JSON_INVALID", "Error: The surrogate pair in string is invalid.")
    return document


def lone_surrogate(document: Any) -> str | None:
    """The first string or key of a parsed document that is not Unicode (JSON's escapes can spell a lone surrogate,
    "\\ud800", which no UTF-8 text, a response or a log line, can hold), shown with escapes; None if all are."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return node.encode("ascii", "backslashreplace").decode()
    return None


_LOOKS = 1000  # letters t and f looked at before mentions_bool just answers "maybe"


def mentions_bool(text: bytes) -> bool:
    """Whether JSON text may hold a true or false literal inside an array (after "[" or ","); when it does not, no
    tensor value is a bool: a gate before has_bool walks a tensor's values. Literals after ":" (parameters such as
    "binary_data": false, which tritonclient sends) do not count. Numbers hold no t or f, so only the few letters of
    keys and strings are looked at, each found by a one-byte search (memchr): a 3 MB tensor body costs microseconds
    where a search for b"true" costs milliseconds."""
    looked = 0
    for letter, literal in ((b"t", b"true"), (b"f", b"false")):
        at = text.find(letter)
        while at >= 0:
            looked += 1
            if looked > _LOOKS:
                return True  # a body full of such letters: let has_bool decide
            if text.startswith(literal, at):
                before = at - 1
                while before >= 0 and text[before] in b" \t\r\n":
                    before -= 1
                if before >= 0 and text[before] in b"[,":
                    return True
            at = text.find(letter, at + 1)
    return False


def has_bool(node: Any) -> bool:
    """Whether a value (nested lists or a scalar) holds a JSON boolean: among numbers numpy takes them for 0 and 1,
    where OVMS refuses any value that is not a number."""
    stack = [node]
    while stack:
        item = stack.pop()
        if type(item) is not list:
            if type(item) is bool:
                return True
        elif item and type(item[0]) is list:
            stack.extend(item)
        elif bool in set(map(type, item)):
            return True
    return False
