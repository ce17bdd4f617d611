"""Which credential source `s3_credentials.resolve` takes, without a store: the environment alone
answers only when botocore would give the same answer; anything else goes to botocore's chain.
(Each source's real effect on the wire is tested end to end in test_e2e_s3_credentials.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from apilake.destinations import s3_credentials
from apilake.errors import DestinationError
from apilake.jobfile import S3Options

KEYS = {"AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "env-secret"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE", "AWS_MAX_ATTEMPTS", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.parametrize(
    ("env", "files", "options", "from_environment"),
    [
        (KEYS, {}, {}, True),
        (KEYS | {"AWS_SESSION_TOKEN": "tok"}, {}, {}, True),
        (KEYS | {"AWS_CREDENTIAL_EXPIRATION": "2030-01-01T00:00:00Z"}, {}, {}, False),  # botocore refreshes these
        (KEYS, {"config": ""}, {}, True),  # an empty file (or /dev/null) sets nothing
        (KEYS, {"config": "[default]\nregion = eu-west-1\n"}, {}, False),  # the file may set the region
        (KEYS, {"credentials": "[default]\nregion = eu-west-1\n"}, {}, False),
        (KEYS | {"AWS_PROFILE": "p"}, {"config": "[profile p]\nregion = eu-west-1\n"}, {}, False),
        (KEYS, {"config": "[profile p]\naws_access_key_id = AKIDFILE\naws_secret_access_key = s\n"}, {"profile": "p"}, False),
    ],
)
def test_the_environment_answers_alone_only_when_botocore_would_agree(
    env: dict[str, str], files: dict[str, str], options: dict[str, str], from_environment: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    found = s3_credentials.resolve(S3Options(**options))
    assert isinstance(found.credentials, s3_credentials.FixedCredentials) == from_environment
    keys = found.current_keys()
    assert keys.access_key_id == ("AKIDFILE" if "profile" in options else "AKIDENV")
    assert "secret" not in repr(keys) and "AKID" not in repr(keys)


@pytest.mark.parametrize(
    ("env", "options", "region", "endpoint"),
    [
        ({}, {}, "us-east-1", None),
        ({"AWS_REGION": "eu-west-3"}, {}, "us-east-1", None),  # boto3 does not read AWS_REGION
        ({"AWS_DEFAULT_REGION": "eu-west-2"}, {}, "eu-west-2", None),
        ({"AWS_DEFAULT_REGION": "eu-west-2"}, {"region": "ap-south-1"}, "ap-south-1", None),
        ({"AWS_ENDPOINT_URL": "http://g:1"}, {}, "us-east-1", "http://g:1"),
        ({"AWS_ENDPOINT_URL": "http://g:1", "AWS_ENDPOINT_URL_S3": "http://s:2"}, {}, "us-east-1", "http://s:2"),
        ({"AWS_ENDPOINT_URL_S3": "http://s:2"}, {"endpoint_url": "http://j:3"}, "us-east-1", "http://j:3"),
        ({"AWS_ENDPOINT_URL_S3": "http://s:2", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}, {}, "us-east-1", None),
    ],
)
def test_region_and_endpoint_from_the_environment(
    env: dict[str, str], options: dict[str, str], region: str, endpoint: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (KEYS | env).items():
        monkeypatch.setenv(name, value)
    found = s3_credentials.resolve(S3Options(**options))
    assert (found.region, found.endpoint) == (region, endpoint)


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [({}, None), ({"AWS_SESSION_TOKEN": ""}, None), ({"AWS_SESSION_TOKEN": "new"}, "new"), ({"AWS_SECURITY_TOKEN": "old", "AWS_SESSION_TOKEN": "new"}, "old")],
)
def test_the_session_token_is_the_one_botocore_would_take(tokens: dict[str, str], expected: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (KEYS | tokens).items():
        monkeypatch.setenv(name, value)
    found = s3_credentials.resolve(S3Options())
    assert found.current_keys().token == expected
    assert found.credentials().get("token") == expected  # what obstore is given, whatever it reads itself


def test_unknown_profile_from_aws_profile_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (KEYS | {"AWS_PROFILE": "nosuch"}).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DestinationError, match="AWS profile 'nosuch' is not in the shared AWS config"):
        s3_credentials.resolve(S3Options())


def test_half_a_key_in_the_environment_is_refused_as_boto3_refuses_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    (tmp_path / "credentials").write_text("[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = s\n")
    with pytest.raises(DestinationError, match=r"no usable AWS credentials \(PartialCredentialsError\)"):
        s3_credentials.resolve(S3Options())


def test_no_credentials_anywhere_is_a_destination_error() -> None:
    with pytest.raises(DestinationError, match=r"no usable AWS credentials.*standard AWS chain"):
        s3_credentials.resolve(S3Options())
