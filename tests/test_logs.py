import json
import logging

import pytest

from apilake import logs


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_that_json_would_escape_are_still_masked(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    secret = 'pa"ss\\wörd-42'
    logs.setup(fmt=fmt)
    logs.set_secrets([secret])
    logging.getLogger("apilake").warning("server said: bad key %s", secret)
    err = capsys.readouterr().err
    assert "***" in err
    assert secret not in err and json.dumps(secret)[1:-1] not in err
