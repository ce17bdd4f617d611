"""Text from outside (URLs and error bodies a server sent, values of a job file) made safe to print.

A control character in a log line can forge another line (`\n`, `\r`), rewrite a terminal (ESC,
the C1 controls) or reorder what a reader sees (Unicode line separators, bidi overrides). Every
line apilake writes for people passes through `printable` once, where it is formatted: log
handlers, the end-of-run summary, the CLI's error message.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` with each control character shown as an escape (`\\n`, `\\x1b`, `\\u2028`): visible,
    and never a line break or a terminal command."""
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
