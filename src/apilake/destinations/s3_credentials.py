"""AWS credentials and settings for the S3 store, resolved exactly as boto3 resolves them.

The data path runs on obstore (Rust `object_store`), whose own chain knows the environment,
web identity, ECS and EC2 roles but not shared config / credentials files, profiles, SSO or
`credential_process`, and reads some variables under other names. So apilake does not use it:

- With keys in the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optionally
  `AWS_SESSION_TOKEN`), no profile named (`s3.profile`, `AWS_PROFILE`) and no shared AWS files to
  read, the answer is what botocore would give, read straight from the same variables (the
  region from `AWS_DEFAULT_REGION`; botocore does not read `AWS_REGION`): a container's or a CI
  job's usual case pays nothing for botocore.
- Otherwise botocore's session resolves everything (environment, `AWS_PROFILE` / `s3.profile`,
  config and credentials files, web identity, SSO, process credentials, ECS, instance metadata)
  and hands the credentials to obstore through its credential-provider hook, asked again before
  temporary ones expire. botocore's session and credential providers are light; the service
  models boto3's client loads are not needed.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apilake.errors import DestinationError

if TYPE_CHECKING:
    from botocore.session import Session
    from obstore.store import S3Credential

    from apilake.jobfile import S3Options

DEFAULT_REGION = "us-east-1"  # botocore's S3 default when nothing names a region
DEFAULT_ATTEMPTS = 3  # botocore's standard retry mode: 3 attempts
REFRESH_MARGIN = dt.timedelta(minutes=5)  # ask again this long before temporary credentials expire

HELP = (
    "apilake takes S3 credentials only from the standard AWS chain: the environment "
    "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), a profile in ~/.aws/config "
    "(AWS_PROFILE or s3.profile in the job file), or an instance / task role"
)


@dataclass(frozen=True, slots=True)
class Keys:
    """One set of AWS credentials; `expires` for temporary ones. Never printed (no repr)."""

    access_key_id: str
    secret_access_key: str
    token: str | None = None
    expires: dt.datetime | None = None

    def __repr__(self) -> str:
        return "Keys(...)"


@dataclass(frozen=True, slots=True)
class Settings:
    """What the store needs besides the job file's options: the region, the endpoint, a CA bundle,
    the number of attempts, and where the credentials come from (obstore asks them through it,
    so nothing it would read from the environment itself, an empty AWS_SESSION_TOKEN say, counts)."""

    region: str
    region_given: bool  # named by the job file, the environment or the profile (else the default)
    endpoint: str | None  # s3.endpoint_url, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / the profile's
    ca_bundle: str | None
    max_attempts: int
    credentials: FixedCredentials | CredentialProvider

    def current_keys(self) -> Keys:
        """The credentials to sign with now (temporary ones refreshed when due)."""
        return self.credentials.keys()


def resolve(options: S3Options) -> Settings:
    """The settings of the standard AWS chain for these options (blocking: botocore may read files
    or ask a metadata endpoint). Raises `DestinationError` for an unknown profile or no credentials."""
    env = os.environ
    named = options.profile or env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE")
    expiring = env.get("AWS_CREDENTIAL_EXPIRATION")  # botocore refreshes such keys: its chain
    if not named and not expiring and env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY") and not _shared_files():
        configured = None if _true(env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")) else env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        region = options.region or env.get("AWS_DEFAULT_REGION")
        return Settings(
            region=region or DEFAULT_REGION,
            region_given=bool(region),
            endpoint=options.endpoint_url or configured or None,
            ca_bundle=env.get("AWS_CA_BUNDLE") or None,
            max_attempts=_attempts(env.get("AWS_MAX_ATTEMPTS")),
            # botocore's order: the older AWS_SECURITY_TOKEN first
            credentials=FixedCredentials(
                Keys(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SECURITY_TOKEN") or env.get("AWS_SESSION_TOKEN") or None)
            ),
        )
    return _from_botocore(options)


def aws_endpoint(region: str) -> str:
    """AWS's own S3 endpoint for a region (China's regions live under amazonaws.com.cn)."""
    return f"https://s3.{region}.amazonaws.com{'.cn' if region.startswith('cn-') else ''}"


def _shared_files() -> bool:
    """Whether a shared AWS config or credentials file exists: it may set the region, a CA bundle
    or retries even when the keys come from the environment, so botocore must read it."""
    env = os.environ
    config = env.get("AWS_CONFIG_FILE") or "~/.aws/config"
    credentials = env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
    return any(_has_content(Path(name).expanduser()) for name in (config, credentials))


def _has_content(path: Path) -> bool:
    """An empty file (or /dev/null, as containers often point these variables at) sets nothing."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _true(value: object) -> bool:
    return str(value).strip().lower() == "true"


def _attempts(value: object) -> int:
    try:
        return max(1, int(str(value))) if value not in (None, "") else DEFAULT_ATTEMPTS
    except ValueError:
        return DEFAULT_ATTEMPTS


def _from_botocore(options: S3Options) -> Settings:
    import botocore.session
    from botocore import exceptions as bx

    session = botocore.session.Session(profile=options.profile)
    try:
        session.get_scoped_config()  # an unknown profile fails here, before any request
        provider = CredentialProvider(session)
        provider.keys()  # no credentials at all fails here, before any request
    except bx.ProfileNotFound as exc:
        # The profile may come from AWS_PROFILE rather than the job file: name the one botocore looked for.
        profile = exc.kwargs.get("profile", options.profile)
        raise DestinationError(f"AWS profile {profile!r} is not in the shared AWS config; {HELP}") from None
    except (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError) as exc:
        raise DestinationError(f"no usable AWS credentials ({type(exc).__name__}); {HELP}") from None
    except bx.BotoCoreError as exc:
        raise DestinationError(f"the AWS configuration could not be read: {exc}; {HELP}") from None
    region = options.region or session.get_config_variable("region")
    return Settings(
        region=region or DEFAULT_REGION,
        region_given=bool(region),
        endpoint=options.endpoint_url or _configured_endpoint(session),
        ca_bundle=session.get_config_variable("ca_bundle"),
        max_attempts=_attempts(session.get_config_variable("max_attempts")),
        credentials=provider,
    )


def _configured_endpoint(session: Session) -> str | None:
    """The S3 endpoint the environment or the profile configures, as boto3 would take it."""
    from botocore.configprovider import ConfiguredEndpointProvider

    if _true(session.get_config_variable("ignore_configured_endpoint_urls")):
        return None
    found = ConfiguredEndpointProvider(session.full_config, session.get_scoped_config(), "s3").provide()
    return str(found) if found else None


class CredentialProvider:
    """obstore's credential hook over botocore's chain: resolved once, refreshed before expiry."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._credentials: Any = None

    def keys(self) -> Keys:
        from botocore.exceptions import NoCredentialsError

        if self._credentials is None:
            self._credentials = self._session.get_credentials()
        if self._credentials is None:
            raise NoCredentialsError()
        frozen = self._credentials.get_frozen_credentials()  # refreshes temporary credentials when due
        expiry: dt.datetime | None = getattr(self._credentials, "_expiry_time", None)
        return Keys(frozen.access_key, frozen.secret_key, frozen.token, expiry)

    def __call__(self) -> S3Credential:
        return _for_obstore(self.keys())


class FixedCredentials:
    """obstore's credential hook over keys read from the environment: the same answer each time."""

    def __init__(self, keys: Keys) -> None:
        self._keys = keys

    def keys(self) -> Keys:
        return self._keys

    def __call__(self) -> S3Credential:
        return _for_obstore(self._keys)


def _for_obstore(keys: Keys) -> S3Credential:
    return {
        "access_key_id": keys.access_key_id,
        "secret_access_key": keys.secret_access_key,
        "token": keys.token,
        # obstore takes UTC itself (botocore's expiry carries dateutil's zone)
        "expires_at": (keys.expires - REFRESH_MARGIN).astimezone(dt.UTC) if keys.expires is not None else None,
    }
