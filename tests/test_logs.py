import json
import logging

import pytest

from apilake import logs
from apilake.printable import printable


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_that_json_would_escape_are_still_masked(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    secret = 'pa"ss\\wörd-42'
    logs.setup(fmt=fmt)
    logs.set_secrets([secret])
    logging.getLogger("apilake").warning("server said: bad key %s", secret)
    err = capsys.readouterr().err
    assert "***" in err
    assert secret not in err and json.dumps(secret)[1:-1] not in err


@pytest.mark.parametrize(
    "text, expected",
    [
        ("plain text, tabs\tand all", "plain text, tabs\\tand all"),
        ("a\nFORGED line", "a\\nFORGED line"),
        ("a\r\nb", "a\\r\\nb"),
        ("\x1b[2Jcleared", "\\x1b[2Jcleared"),
        ("nul\x00 del\x7f c1\x85\x9b", "nul\\x00 del\\x7f c1\\x85\\x9b"),
        ("line\u2028sep \u202eevil", "line\\u2028sep \\u202eevil"),
        ("wörd ✓ 日本", "wörd ✓ 日本"),  # printable non-ASCII stays
    ],
)
def test_printable_escapes_control_characters_visibly(text: str, expected: str) -> None:
    assert printable(text) == expected


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_logged_value_cannot_start_a_line_of_its_own(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup(fmt=fmt)
    logging.getLogger("apilake").warning("retrying %s", "file\n2026-11-25 00:00:00 ERROR   [run] forged\x1b[0m")
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "\x1b" not in err
    assert "forged\\x1b[0m" in (json.loads(err)["message"] if fmt == "json" else err)
