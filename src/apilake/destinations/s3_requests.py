"""The few S3 calls obstore does not make: listing, sizing and aborting multipart uploads by id.

obstore aborts the uploads it starts, but a killed run's uploads must be found and aborted by the
next run (`s3_leftovers`), and `object_store` has no call for that. These three bodiless requests
(ListMultipartUploads, ListParts, AbortMultipartUpload) are signed by botocore's SigV4 signer,
the same code boto3 signs with, and sent over `http.client` with the store's TLS settings.
Blocking: callers run them in threads.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import ssl
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, unquote, urlsplit

from apilake.destinations.s3_credentials import Keys

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
MAX_ANSWER = 16 << 20  # a listing page of 1,000 uploads is ~0.5 MB; more is not an S3 answer
TIMEOUT = 60.0
PROBE_TIMEOUT = 10.0  # asking AWS where a bucket lives: a fallback follows, no need to wait long


class RequestFailed(Exception):
    """A signed request that got no usable answer: no credentials, no connection, no S3 XML."""


class S3Answer(RequestFailed):
    """An S3 error answer: its HTTP status and the `<Code>` and `<Message>` of its body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code} {message}".strip())
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True, slots=True)
class Upload:
    """A multipart upload in progress; `key` is the full key in the bucket."""

    key: str
    upload_id: str
    initiated: dt.datetime


@dataclass(frozen=True, slots=True)
class Requests:
    """Signed requests to one bucket: where it is, how it is addressed, with which credentials."""

    endpoint: str  # scheme://host[:port], without the bucket
    bucket: str
    virtual_hosted: bool
    region: str
    keys: Callable[[], Keys]
    verify_tls: bool = True
    ca_bundle: str | None = None

    def uploads(self, full_prefix: str) -> Iterator[Upload]:
        """Multipart uploads in progress under a full key prefix, page by page."""
        query = {"uploads": "", "prefix": full_prefix}
        while True:
            page = self._send("GET", "", query)
            for found in _all(page, "Upload"):
                initiated = dt.datetime.fromisoformat(_text(found, "Initiated").replace("Z", "+00:00"))
                if initiated.tzinfo is None:  # S3 says UTC; a store that leaves the zone out means it too
                    initiated = initiated.replace(tzinfo=dt.UTC)
                yield Upload(_text(found, "Key"), _text(found, "UploadId"), initiated)
            if _text(page, "IsTruncated") != "true":
                return
            markers = {"key-marker": _text(page, "NextKeyMarker"), "upload-id-marker": _text(page, "NextUploadIdMarker")}
            if not markers["key-marker"] or all(query.get(k) == v for k, v in markers.items()):
                raise S3Answer(200, "BadListing", "the store says the listing goes on but gives no new place to go on from")
            query = {**query, **markers}

    def part_bytes(self, upload: Upload) -> int:
        """The bytes the parts of an upload hold."""
        query = {"uploadId": upload.upload_id}
        total = 0
        while True:
            page = self._send("GET", upload.key, query)
            total += sum(int(_text(part, "Size") or 0) for part in _all(page, "Part"))
            if _text(page, "IsTruncated") != "true":
                return total
            marker = _text(page, "NextPartNumberMarker")
            if not marker or query.get("part-number-marker") == marker:
                raise S3Answer(200, "BadListing", "the store says the part listing goes on but gives no new place to go on from")
            query = {**query, "part-number-marker": marker}

    def abort(self, upload: Upload) -> None:
        self._send("DELETE", upload.key, {"uploadId": upload.upload_id})

    def _send(self, method: str, key: str, query: dict[str, str]) -> ET.Element:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        base = urlsplit(self.endpoint)
        host = f"{self.bucket}.{base.netloc}" if self.virtual_hosted else base.netloc
        path = base.path.rstrip("/") + ("" if self.virtual_hosted else f"/{self.bucket}") + "/" + quote(key, safe="/-_.~")
        target = path + "?" + "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))
        url = f"{base.scheme}://{host}{target}"
        request = AWSRequest(method=method, url=url, headers={"Host": host})
        try:
            keys = self.keys()
        except Exception as exc:  # noqa: BLE001 - the chain's failures (botocore's many types) become one
            raise RequestFailed(f"no usable AWS credentials ({type(exc).__name__})") from None
        S3SigV4Auth(Credentials(keys.access_key_id, keys.secret_access_key, keys.token), "s3", self.region).add_auth(request)
        try:
            status, _headers, body = _request(method, url, dict(request.headers.items()), self.verify_tls, self.ca_bundle)
        except ssl.SSLError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise RequestFailed(f"cannot reach the S3 endpoint {self.endpoint}: {type(exc).__name__}: {exc}") from None
        if status >= 300:
            raise _answer(status, body)
        if not body.strip():
            return ET.Element("empty")
        return _parse(status, body)


def _request(
    method: str, url: str, headers: dict[str, str], verify_tls: bool, ca_bundle: str | None, timeout: float = TIMEOUT
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request to `url`, through the environment's proxy: the status, the headers and at most
    MAX_ANSWER + 1 bytes of the body."""
    target = urlsplit(url)
    connection, absolute, proxy_headers = _connect(target.scheme, target.netloc, verify_tls, ca_bundle, timeout)
    try:
        origin_form = target.path + (f"?{target.query}" if target.query else "")
        connection.request(method, url if absolute else origin_form, headers=headers | proxy_headers)
        answer = connection.getresponse()
        return answer.status, answer.headers, answer.read(MAX_ANSWER + 1)
    finally:
        connection.close()


def _connect(
    scheme: str, host: str, verify_tls: bool, ca_bundle: str | None, timeout: float = TIMEOUT
) -> tuple[http.client.HTTPConnection, bool, dict[str, str]]:
    """A connection to `host`, through the proxy the environment names for it as obstore's
    requests go (HTTP_PROXY / HTTPS_PROXY, NO_PROXY); whether the request line takes the whole
    URL (plain HTTP through a proxy), and headers for the proxy."""
    proxy = _proxy_for(scheme, host)
    proxy_headers: dict[str, str] = {}
    if proxy is not None and proxy.username:
        userinfo = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
        proxy_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(userinfo).decode()
    via = f"{proxy.hostname}:{proxy.port or 80}" if proxy is not None else None
    if scheme == "http":
        return http.client.HTTPConnection(via or host, timeout=timeout), via is not None, proxy_headers
    # s3.verify_tls: false is the user's explicit choice of an unverified connection
    context = ssl.create_default_context(cafile=ca_bundle) if verify_tls else ssl._create_unverified_context()
    if via is None:
        return http.client.HTTPSConnection(host, timeout=timeout, context=context), False, {}
    connection = http.client.HTTPSConnection(via, timeout=timeout, context=context)
    connection.set_tunnel(host, headers=proxy_headers)  # CONNECT: the proxy sees no request
    return connection, False, {}


def _proxy_for(scheme: str, host: str) -> SplitResult | None:
    hostname = urlsplit(f"//{host}").hostname or host
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(hostname):
        return None
    return urlsplit(proxy if "://" in proxy else f"http://{proxy}")


AWS_GLOBAL = "https://s3.amazonaws.com"  # answers for every bucket with the region it lives in
REGION_HEADER = "x-amz-bucket-region"


def bucket_region(bucket: str, *, verify_tls: bool = True, ca_bundle: str | None = None) -> str | None:
    """The AWS region a bucket lives in, from S3's answer to an unsigned HEAD of the bucket (it
    says so even when it refuses: 301, 403), or None when S3 cannot be asked."""
    try:
        _status, headers, _body = _request("HEAD", f"{AWS_GLOBAL.rstrip('/')}/{quote(bucket, safe='')}", {}, verify_tls, ca_bundle, PROBE_TIMEOUT)
    except (OSError, http.client.HTTPException):
        return None
    region = headers.get(REGION_HEADER)
    return region.strip() if region and region.strip().replace("-", "").isalnum() else None


def _parse(status: int, body: bytes) -> ET.Element:
    if len(body) > MAX_ANSWER:
        raise S3Answer(status, "AnswerTooLarge", f"the store answered over {MAX_ANSWER >> 20} MiB")
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        raise S3Answer(status, "NotS3", "the store's answer is not S3 XML") from None


def _answer(status: int, body: bytes) -> S3Answer:
    try:
        root = _parse(status, body)
    except S3Answer:
        return S3Answer(status, str(status), "")
    return S3Answer(status, root.findtext("Code") or str(status), root.findtext("Message") or "")


def _all(element: ET.Element, name: str) -> Iterator[ET.Element]:
    """Children named `name`, in S3's namespace or in none (some compatible stores omit it)."""
    return (child for child in element if child.tag in (f"{NS}{name}", name))


def _text(element: ET.Element, name: str) -> str:
    return element.findtext(f"{NS}{name}") or element.findtext(name) or ""
