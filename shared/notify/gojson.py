"""JSON bytes as Go's ``encoding/json`` ``Marshal`` writes them, for payloads that must equal Flux's.

notification-controller marshals every payload with ``json.Marshal`` (``internal/notifier/client.go``
``postMessage``; the generic-hmac signature is over those bytes). Go's encoder:

- writes struct fields in declaration order (callers pass dicts built in that order) and map keys
  sorted (callers sort, see :func:`go_map`), compact, with no spaces;
- writes non-ASCII as raw UTF-8, except U+2028 and U+2029 (``\\u2028``, ``\\u2029``);
- escapes ``<``, ``>`` and ``&`` as ``\\u003c``, ``\\u003e``, ``\\u0026`` (``Marshal`` always escapes HTML;
  only an ``Encoder`` with ``SetEscapeHTML(false)`` does not);
- escapes ``"`` ``\\`` and control characters: ``\\b \\f \\n \\r \\t`` short, the others ``\\u00XX``
  (lower-case hex), as Python's encoder does;
- never sees a lone surrogate: Go's decoder already turned an escaped one (``"\\ud800"``) into U+FFFD,
  so this module does the same.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False, allow_nan=False)
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                             "\u2028": "\\u2028", "\u2029": "\\u2029"})
_SURROGATE = re.compile("[\ud800-\udfff]")


def marshal(value: Any) -> bytes:
    """``value`` (dicts, lists, str, bool, int, None) as Go's ``json.Marshal`` bytes.

    Valid because ``<``, ``>``, ``&``, U+2028 and U+2029 can only occur inside JSON strings, where Go
    escapes them and Python does not."""
    text = _ENCODER.encode(value).translate(_GO_ESCAPES)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from "\udXXX" escapes: Go decoded them as U+FFFD
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def string_cost(text: str) -> int:
    """Bytes ``text`` takes inside a marshalled JSON string (without the quotes)."""
    return len(marshal(text)) - 2


def go_map(mapping: Mapping[str, Any]) -> dict:
    """A Go ``map[string]T``: keys in sorted (UTF-8 byte) order."""
    return {k: mapping[k] for k in sorted(mapping)}
