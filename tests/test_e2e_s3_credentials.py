"""End to end: which AWS credentials, signing region, TLS checks and addressing style `apilake run`
uses for an S3 destination, read off the wire.

Every test empties the AWS environment and points HOME and the AWS config and credentials files
at its own folder, sets up one or more credential sources (often a decoy in a source the AWS
chain ranks lower), runs `apilake run` of a one-unit job into s3://lake/raw on moto behind a
recording proxy, and reads from each request's `Authorization` header (`Credential=<key
id>/<date>/<region>/s3/aws4_request`) and `X-Amz-Security-Token` which credentials and region
signed it: moto accepts any key, so the proxy's record is the evidence. Nothing here knows how
apilake builds its S3 client; the tests pin the behaviour of botocore's chain as apilake uses
it, whatever client carries the data. No secret may appear in anything apilake writes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from altering_proxy import AlteringProxy, Seen
from aws_metadata_server import AwsKeys, MetadataServer
from conftest import details_endpoint, run_cli, write_job
from moto_server import AWS_ENV_TO_CLEAR, DUMMY_AWS_ENV, s3

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DATE = "2026-11-25"
LANDED = f"raw/dataai/details/dt={DATE}/market=ios,product_id=1.json"
SIGNED = re.compile(r"Credential=([^/]+)/\d{8}/([^/]+)/s3/aws4_request")
DEFAULT_REGION = "us-east-1"  # what a request is signed for when nothing names a region

ENVIRONMENT = AwsKeys("AKIAFROMENVIRONMENT1", "secret-of-the-environment-7f3a", "token-of-the-environment-19c2")
CREDENTIALS_DEFAULT = AwsKeys("AKIACREDENTIALSDEFLT", "secret-of-credentials-default-2b8e")
CONFIG_DEFAULT = AwsKeys("AKIACONFIGDEFAULT001", "secret-of-config-default-44d1")
OTHER = AwsKeys("AKIAPROFILEOTHER0001", "secret-of-profile-other-9a0c", "token-of-profile-other-5d77")
THIRD = AwsKeys("AKIAPROFILETHIRD0001", "secret-of-profile-third-0e6b")
INSTANCE_ROLE = AwsKeys("ASIAINSTANCEROLE0001", "secret-of-the-instance-role-81f0", "token-of-the-instance-role-a6d2")
TASK_ROLE = AwsKeys("ASIATASKROLE00000001", "secret-of-the-task-role-3c5b", "token-of-the-task-role-e90d")
TASK_AUTHORIZATION = "task-authorization-token-77aa"
WEB_IDENTITY_TOKEN = "web-identity-jwt-0c1d2e3f"
SSO_ACCESS_TOKEN = "sso-access-token-b4e8"
SECRETS = [
    s for keys in (ENVIRONMENT, CREDENTIALS_DEFAULT, CONFIG_DEFAULT, OTHER, THIRD, INSTANCE_ROLE, TASK_ROLE) for s in (keys.secret_access_key, keys.token) if s
] + [TASK_AUTHORIZATION, WEB_IDENTITY_TOKEN, SSO_ACCESS_TOKEN]
# Whatever else could steer the chain, besides what `AWS_ENV_TO_CLEAR` already names.
MORE_TO_CLEAR = (
    *DUMMY_AWS_ENV,
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_SSO",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_METADATA_SERVICE_TIMEOUT",
    "AWS_METADATA_SERVICE_NUM_ATTEMPTS",
    *(f"{name}{suffix}" for name in ("http", "https", "all", "no") for suffix in ("_proxy", "_PROXY")),
)


@dataclass(frozen=True)
class Store:
    """moto with the bucket `lake` (and the test's own client of it, made before the test sets
    up its AWS environment), and the recording proxy in front of it that apilake talks to."""

    moto: S3Client
    proxy: AlteringProxy
    url: str

    def signatures(self) -> set[tuple[str, str, str | None]]:
        """(key id, signing region, session token) of every S3 request that reached the store."""
        signed = set()
        for seen in self.s3_requests():
            match = SIGNED.search(seen.headers.get("authorization", ""))
            assert match, f"an S3 request without a SigV4 signature: {seen.method} {seen.target}"
            signed.add((match[1], match[2], seen.headers.get("x-amz-security-token")))
        return signed

    def s3_requests(self) -> list[Seen]:
        return [s for s in self.proxy.seen if s not in self.sts_requests()]

    def sts_requests(self) -> list[Seen]:
        """STS's AssumeRole* calls that came through (AWS_ENDPOINT_URL_STS names the proxy)."""
        return [s for s in self.proxy.seen if re.search(rb"<AssumeRole\w*Response", s.answer)]

    def issued(self) -> AwsKeys:
        """The keys the one STS call through the proxy handed out."""
        answers = [s.answer.decode() for s in self.sts_requests()]
        assert len(answers) == 1, [(s.method, s.target, s.status) for s in self.proxy.seen]
        key_id, secret, token = (re.search(f"<{tag}>(.+?)</{tag}>", answers[0]) for tag in ("AccessKeyId", "SecretAccessKey", "SessionToken"))
        assert key_id and secret and token, answers[0]
        return AwsKeys(key_id[1], secret[1], token[1])

    def landed(self) -> list[str]:
        return [o["Key"] for o in self.moto.list_objects_v2(Bucket="lake", Prefix="raw/").get("Contents", [])]

    def written(self) -> str:
        """What apilake stored in the bucket, run records included, as text."""
        return "\n".join(self.moto.get_object(Bucket="lake", Key=key)["Body"].read().decode("utf-8", "replace") for key in self.landed())


@pytest.fixture
def home(bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A HOME of the test's own with no AWS setup: no AWS variables, no proxies, the config and
    credentials files under it (absent until the test writes them), no instance metadata. After
    `bucket`, whose dummy AWS environment it empties."""
    for name in (*AWS_ENV_TO_CLEAR, *MORE_TO_CLEAR):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / ".aws" / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / ".aws" / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # the role tests turn it back on
    return home


@pytest.fixture
def store(bucket: str, home: Path) -> Iterator[Store]:
    proxy = AlteringProxy(bucket, match=None)
    url = proxy.start()
    try:
        yield Store(s3(bucket), proxy, url)
    finally:
        proxy.stop()


def set_environment_keys(monkeypatch: pytest.MonkeyPatch, keys: AwsKeys) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys.secret_access_key)
    if keys.token:
        monkeypatch.setenv("AWS_SESSION_TOKEN", keys.token)


def write_aws_file(home: Path, name: str, sections: dict[str, dict[str, str]]) -> None:
    """~/.aws/config or ~/.aws/credentials with these sections (`default`, `profile other`, ...)."""
    text = "".join(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) for section, values in sections.items())
    (home / ".aws" / name).write_text(text)


def profile(keys: AwsKeys | None = None, **settings: str) -> dict[str, str]:
    """A profile's lines: its keys as the AWS files spell them, and other settings (`region`)."""
    lines = {"aws_access_key_id": keys.access_key_id, "aws_secret_access_key": keys.secret_access_key} if keys else {}
    if keys and keys.token:
        lines["aws_session_token"] = keys.token
    return {**lines, **settings}


def apilake_run(tmp_path: Path, emulator, endpoint_url: str | None, **s3_options: object) -> tuple[subprocess.CompletedProcess[str], str]:
    """`apilake run` of one small unit into s3://lake/raw at `endpoint_url` (None: the job file
    names none): its result, and its output and log file as one text."""
    s3_settings = {**({"endpoint_url": endpoint_url} if endpoint_url else {}), **s3_options}
    job = write_job(tmp_path / "job", emulator, [details_endpoint(("ios",), (1,))], destination="s3://lake/raw", s3=s3_settings)
    log_file = tmp_path / "apilake.log"
    result = run_cli("run", str(job), "--date", DATE, "--log-file", str(log_file))
    return result, "\n".join([result.stdout, result.stderr, log_file.read_text() if log_file.exists() else ""])


def assert_landed_with(store: Store, result: subprocess.CompletedProcess[str], output: str, keys: AwsKeys, region: str = DEFAULT_REGION) -> None:
    """The run landed its unit, every S3 request signed with `keys` for `region`, and no secret
    is in anything it wrote."""
    assert result.returncode == 0, result.stdout + result.stderr
    assert LANDED in store.landed()
    assert store.signatures() == {(keys.access_key_id, region, keys.token)}
    assert_no_secret(output + store.written())


def assert_no_secret(text: str, *more: str) -> None:
    leaked = [s for s in (*SECRETS, *more) if s in text]
    assert not leaked, f"secrets in apilake's output or records: {leaked}"


def assert_refused(result: subprocess.CompletedProcess[str], output: str, *phrases: str) -> None:
    """Exit 2 with a message saying why, no traceback, no secret."""
    assert result.returncode == 2, result.stdout + result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    assert "Traceback" not in output
    assert_no_secret(output)


# -- environment, credentials and config files, profiles --------------------------------------


def test_environment_keys_and_session_token_sign_every_request_before_the_credentials_file(
    tmp_path: Path, emulator, store: Store, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_aws_file(home, "credentials", {"default": profile(CREDENTIALS_DEFAULT)})
    set_environment_keys(monkeypatch, ENVIRONMENT)
    assert_landed_with(store, *apilake_run(tmp_path, emulator, store.url), ENVIRONMENT)


def test_an_empty_session_token_in_the_environment_is_no_token(tmp_path: Path, emulator, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # As botocore reads it; a client reading the variable itself would sign an empty token header.
    set_environment_keys(monkeypatch, CREDENTIALS_DEFAULT)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "")
    assert_landed_with(store, *apilake_run(tmp_path, emulator, store.url), CREDENTIALS_DEFAULT)


def test_credentials_file_default_profile_when_the_environment_has_none_before_the_config_file(tmp_path: Path, emulator, store: Store, home: Path) -> None:
    write_aws_file(home, "credentials", {"default": profile(CREDENTIALS_DEFAULT)})
    write_aws_file(home, "config", {"default": profile(CONFIG_DEFAULT)})
    assert_landed_with(store, *apilake_run(tmp_path, emulator, store.url), CREDENTIALS_DEFAULT)


@pytest.mark.parametrize("file", ["credentials", "config"])
def test_aws_profile_selects_its_profile_in_either_file(tmp_path: Path, emulator, store: Store, home: Path, monkeypatch: pytest.MonkeyPatch, file: str) -> None:
    section = "other" if file == "credentials" else "profile other"
    write_aws_file(home, "credentials", {"default": profile(CREDENTIALS_DEFAULT)} | ({section: profile(OTHER)} if file == "credentials" else {}))
    write_aws_file(home, "config", {"default": profile(CONFIG_DEFAULT)} | ({section: profile(OTHER)} if file == "config" else {}))
    monkeypatch.setenv("AWS_PROFILE", "other")
    assert_landed_with(store, *apilake_run(tmp_path, emulator, store.url), OTHER)


def test_environment_keys_beat_the_profile_aws_profile_names(tmp_path: Path, emulator, store: Store, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's rule: AWS_PROFILE only picks which profile the files give; keys in the
    environment still come first (an explicitly given profile, `s3.profile`, is another matter)."""
    write_aws_file(home, "credentials", {"other": profile(OTHER)})
    monkeypatch.setenv("AWS_PROFILE", "other")
    set_environment_keys(monkeypatch, ENVIRONMENT)
    assert_landed_with(store, *apilake_run(tmp_path, emulator, store.url), ENVIRONMENT)


def test_job_file_profile_beats_environment_keys_and_aws_profile(tmp_path: Path, emulator, store: Store, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_aws_file(home, "credentials", {"default": profile(CREDENTIALS_DEFAULT), "other": profile(OTHER), "third": profile(THIRD)})
    set_environment_keys(monkeypatch, ENVIRONMENT)
    monkeypatch.setenv("AWS_PROFILE", "third")
    assert_landed_with(store, *apilake_run(tmp_path, emulator, store.url, profile="other"), OTHER)


@pytest.mark.parametrize("named_by", ["job file", "AWS_PROFILE"])
def test_unknown_profile_exits_2_naming_it(tmp_path: Path, emulator, store: Store, home: Path, monkeypatch: pytest.MonkeyPatch, named_by: str) -> None:
    write_aws_file(home, "credentials", {"default": profile(CREDENTIALS_DEFAULT)})
    set_environment_keys(monkeypatch, ENVIRONMENT)
    if named_by == "AWS_PROFILE":
        monkeypatch.setenv("AWS_PROFILE", "nosuchprofile")
    result, output = apilake_run(tmp_path, emulator, store.url, **({"profile": "nosuchprofile"} if named_by == "job file" else {}))
    assert_refused(result, output, "AWS profile 'nosuchprofile'", "standard AWS chain")
    assert store.proxy.seen == []
    assert emulator.stats.count() == 0


# -- the signing region ----------------------------------------------------------------------

REGION_CASES = {
    # case: (s3.region, AWS_REGION, AWS_DEFAULT_REGION, the default profile's region, signed for)
    "job file first": ("eu-west-3", "ca-central-1", "ap-south-1", "sa-east-1", "eu-west-3"),
    "AWS_DEFAULT_REGION before the profile": (None, None, "ap-south-1", "sa-east-1", "ap-south-1"),
    "the profile's region": (None, None, None, "sa-east-1", "sa-east-1"),
    "AWS_REGION is not read": (None, "ca-central-1", None, "sa-east-1", "sa-east-1"),
    "AWS_REGION alone is not read either": (None, "ca-central-1", None, None, DEFAULT_REGION),
    "nothing names one": (None, None, None, None, DEFAULT_REGION),
}


@pytest.mark.parametrize("case", REGION_CASES)
def test_signing_region(tmp_path: Path, emulator, store: Store, home: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    job_region, aws_region, aws_default_region, profile_region, expected = REGION_CASES[case]
    set_environment_keys(monkeypatch, ENVIRONMENT)
    for name, value in (("AWS_REGION", aws_region), ("AWS_DEFAULT_REGION", aws_default_region)):
        if value:
            monkeypatch.setenv(name, value)
    if profile_region:
        write_aws_file(home, "config", {"default": profile(region=profile_region)})
    result, output = apilake_run(tmp_path, emulator, store.url, **({"region": job_region} if job_region else {}))
    assert_landed_with(store, result, output, ENVIRONMENT, region=expected)


def test_job_file_profile_gives_its_region_too(tmp_path: Path, emulator, store: Store, home: Path) -> None:
    write_aws_file(home, "config", {"default": profile(CONFIG_DEFAULT, region="sa-east-1"), "profile other": profile(OTHER, region="eu-north-1")})
    assert_landed_with(store, *apilake_run(tmp_path, emulator, store.url, profile="other"), OTHER, region="eu-north-1")


# -- roles: EC2 instance, ECS task, web identity, assumed, SSO; credential_process ---------------------------------------------


def test_ec2_instance_role_from_imdsv2(tmp_path: Path, emulator, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The role's keys, asked for with an IMDSv2 session token; the instance's region, which the
    metadata service would tell, is not used (signed for us-east-1)."""
    metadata = MetadataServer(instance_role=INSTANCE_ROLE)
    with metadata as url:
        monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url)
        result, output = apilake_run(tmp_path, emulator, store.url)
    assert_landed_with(store, result, output, INSTANCE_ROLE)
    assert ("PUT", "/latest/api/token", 200) in [(a.method, a.path, a.status) for a in metadata.seen]
    credentials = [a for a in metadata.seen if a.path.startswith("/latest/meta-data/iam/security-credentials/")]
    assert credentials and all(a.headers.get("x-aws-ec2-metadata-token") == metadata.session_token for a in credentials)
    assert_no_secret(output, metadata.session_token)


def test_ecs_task_role_before_the_instance_role(tmp_path: Path, emulator, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    metadata = MetadataServer(instance_role=INSTANCE_ROLE, task_role=TASK_ROLE, task_authorization=TASK_AUTHORIZATION)
    with metadata as url:
        monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url)
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{url}/creds")
        monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", TASK_AUTHORIZATION)
        result, output = apilake_run(tmp_path, emulator, store.url)
    assert_landed_with(store, result, output, TASK_ROLE)
    assert ("GET", "/creds", 200) in [(a.method, a.path, a.status) for a in metadata.seen]
    assert not [a for a in metadata.seen if a.path.startswith("/latest/")]  # the instance role was never asked


def test_web_identity_role_from_sts(tmp_path: Path, emulator, store: Store, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IRSA: the token file and role given, STS (moto's, through the recording proxy, by
    AWS_ENDPOINT_URL_STS) swaps them for the keys that sign; the credentials file comes later."""
    write_aws_file(home, "credentials", {"default": profile(CREDENTIALS_DEFAULT)})
    token_file = tmp_path / "web-identity-token"
    token_file.write_text(WEB_IDENTITY_TOKEN)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/lake-writer")
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "apilake-e2e")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", store.url)
    result, output = apilake_run(tmp_path, emulator, store.url)
    issued = store.issued()
    assert_landed_with(store, result, output, issued)
    assert_no_secret(output + store.written(), issued.secret_access_key, issued.token or "")


@pytest.mark.parametrize("named_by", ["job file", "AWS_PROFILE"])
def test_profile_that_assumes_a_role_with_a_source_profile(
    tmp_path: Path, emulator, store: Store, home: Path, monkeypatch: pytest.MonkeyPatch, named_by: str
) -> None:
    """`role_arn` + `source_profile`: the source profile's keys sign the AssumeRole call, the
    role's keys sign S3, both for the profile's region (without one, STS is not called: exit 2,
    "You must specify a region", whatever `s3.region` says)."""
    write_aws_file(home, "credentials", {"default": profile(CREDENTIALS_DEFAULT), "source": profile(THIRD)})
    role = {"role_arn": "arn:aws:iam::123456789012:role/lake-writer", "source_profile": "source", "region": "eu-west-1"}
    write_aws_file(home, "config", {"profile other": role})
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", store.url)
    if named_by == "AWS_PROFILE":
        monkeypatch.setenv("AWS_PROFILE", "other")
    result, output = apilake_run(tmp_path, emulator, store.url, **({"profile": "other"} if named_by == "job file" else {}))
    issued = store.issued()
    assert_landed_with(store, result, output, issued, region="eu-west-1")
    assert re.search(f"Credential={THIRD.access_key_id}/\\d{{8}}/eu-west-1/sts/aws4_request", store.sts_requests()[0].headers["authorization"])
    assert_no_secret(output + store.written(), issued.secret_access_key, issued.token or "")


def test_credential_process_of_the_config_file(tmp_path: Path, emulator, store: Store, home: Path) -> None:
    helper = tmp_path / "credential-helper.py"
    document = {"Version": 1, "AccessKeyId": OTHER.access_key_id, "SecretAccessKey": OTHER.secret_access_key, "SessionToken": OTHER.token}
    helper.write_text(f"print({json.dumps(json.dumps(document))})\n")
    write_aws_file(home, "config", {"default": {"credential_process": f"{sys.executable} {helper}"}})
    assert_landed_with(store, *apilake_run(tmp_path, emulator, store.url), OTHER)


def test_sso_profile_with_a_cached_login(tmp_path: Path, emulator, store: Store, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IAM Identity Center: the access token `aws sso login` cached is swapped at the SSO portal
    (AWS_ENDPOINT_URL_SSO, here on loopback) for the role's keys."""
    start_url = "https://apilake-e2e.awsapps.com/start"
    sso_profile = {"sso_start_url": start_url, "sso_region": "eu-west-1", "sso_account_id": "123456789012", "sso_role_name": "apilake-writer"}
    write_aws_file(home, "config", {"profile other": sso_profile})
    cache = home / ".aws" / "sso" / "cache"
    cache.mkdir(parents=True)
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    login = {"startUrl": start_url, "region": "eu-west-1", "accessToken": SSO_ACCESS_TOKEN, "expiresAt": expires}
    (cache / f"{hashlib.sha1(start_url.encode()).hexdigest()}.json").write_text(json.dumps(login))
    portal = MetadataServer(sso_role=TASK_ROLE, sso_access_token=SSO_ACCESS_TOKEN)
    with portal as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SSO", url)
        result, output = apilake_run(tmp_path, emulator, store.url, profile="other")
    assert_landed_with(store, result, output, TASK_ROLE)
    assert [(a.path.split("?")[0], a.status) for a in portal.seen] == [("/federation/credentials", 200)]


# -- no credentials ----------------------------------------------------------------------------


def test_no_credentials_anywhere_exits_2_naming_the_chain_before_any_request(tmp_path: Path, emulator, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole chain is tried, the instance metadata service last: here a closed loopback port."""
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    result, output = apilake_run(tmp_path, emulator, store.url)
    assert_refused(result, output, "no usable AWS credentials", "standard AWS chain")
    assert store.proxy.seen == []
    assert emulator.stats.count() == 0


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connecting is refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def tls_store(bucket: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Store, Path]]:
    """The store behind HTTPS with a certificate for 127.0.0.1 from a private CA, and that CA."""
    ca, cert, key = private_ca_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    proxy = AlteringProxy(bucket, match=None, tls=context)
    url = proxy.start()
    set_environment_keys(monkeypatch, ENVIRONMENT)
    try:
        yield Store(s3(bucket), proxy, url), ca
    finally:
        proxy.stop()


def private_ca_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA (as a self-hosted store behind a company CA has), and the store's certificate
    for 127.0.0.1 signed by it: the CA's file, the certificate's and its key's."""
    now = dt.datetime.now(dt.UTC)

    def issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, store_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = issue("apilake test CA", ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apilake test CA")]), ca_key, ca=True)
    store = issue("apilake test store", store_key, ca.subject, ca_key, ca=False)
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "store-cert.pem", folder / "store-key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(store.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(store_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def test_self_signed_endpoint_is_refused_by_default(tmp_path: Path, emulator, tls_store: tuple[Store, Path]) -> None:
    store, _cert = tls_store
    result, output = apilake_run(tmp_path, emulator, store.url)
    assert_refused(result, output, "TLS failed talking to the S3 endpoint", "certificate is not trusted", "AWS_CA_BUNDLE")
    assert store.proxy.seen == []
    assert emulator.stats.count() == 0


@pytest.mark.parametrize("trust", ["verify_tls: false", "AWS_CA_BUNDLE", "ca_bundle of the profile"])
def test_self_signed_endpoint_lands_when_trusted(
    tmp_path: Path, emulator, tls_store: tuple[Store, Path], home: Path, monkeypatch: pytest.MonkeyPatch, trust: str
) -> None:
    store, cert = tls_store
    if trust == "AWS_CA_BUNDLE":
        monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
    if trust == "ca_bundle of the profile":
        write_aws_file(home, "config", {"default": {"ca_bundle": str(cert)}})
    result, output = apilake_run(tmp_path, emulator, store.url, **({"verify_tls": False} if trust == "verify_tls: false" else {}))
    assert_landed_with(store, result, output, ENVIRONMENT)


# -- endpoint ----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "endpoint_url of the profile"])
def test_endpoint_from_the_environment_or_profile_when_the_job_file_names_none(
    tmp_path: Path, emulator, store: Store, home: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    set_environment_keys(monkeypatch, ENVIRONMENT)
    if source.startswith("AWS_"):
        monkeypatch.setenv(source, store.url)
    else:
        write_aws_file(home, "config", {"default": {"endpoint_url": store.url}})
    assert_landed_with(store, *apilake_run(tmp_path, emulator, None), ENVIRONMENT)


def test_job_file_endpoint_beats_the_environment_and_the_profile(tmp_path: Path, emulator, store: Store, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_environment_keys(monkeypatch, ENVIRONMENT)
    nowhere = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", nowhere)
    write_aws_file(home, "config", {"default": {"endpoint_url": nowhere}})
    assert_landed_with(store, *apilake_run(tmp_path, emulator, store.url), ENVIRONMENT)


# -- addressing style --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "host", "virtual"),
    [
        ("path", "localhost", False),
        ("auto", "localhost", False),  # a custom endpoint: path style, even for a host name
        ("auto", "127.0.0.1", False),
        ("virtual", "localhost", True),
        ("virtual", "127.0.0.1", False),  # no DNS name to put the bucket in: path style
    ],
)
def test_addressing_style(tmp_path: Path, emulator, store: Store, monkeypatch: pytest.MonkeyPatch, style: str, host: str, virtual: bool) -> None:
    """`lake.localhost` resolves on few systems, so the store is also apilake's HTTP proxy
    (HTTP_PROXY, which the S3 client honours; the vendor at 127.0.0.1 is exempt by NO_PROXY):
    the request line and Host header then show where the bucket went."""
    set_environment_keys(monkeypatch, ENVIRONMENT)
    monkeypatch.setenv("HTTP_PROXY", store.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    port = urlsplit(store.url).port
    result, output = apilake_run(tmp_path, emulator, f"http://{host}:{port}", addressing_style=style)
    assert_landed_with(store, result, output, ENVIRONMENT)
    for seen in store.s3_requests():
        target = urlsplit(seen.target)
        assert (target.netloc or seen.headers["host"]) == (f"lake.{host}:{port}" if virtual else f"{host}:{port}")
        assert target.path.startswith("/lake") != virtual, seen.target
