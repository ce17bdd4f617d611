"""Where role credentials come from, on loopback: the EC2 instance metadata service (IMDSv2,
`AWS_EC2_METADATA_SERVICE_ENDPOINT`), the ECS task credentials endpoint
(`AWS_CONTAINER_CREDENTIALS_FULL_URI`) and the IAM Identity Center (SSO) portal's
GetRoleCredentials (`AWS_ENDPOINT_URL_SSO`), as the AWS credential chain reaches them.

`with MetadataServer(instance_role=..., task_role=..., sso_role=...) as url:` serves any of them
on 127.0.0.1 and a free port and stops after; every request it answered is in `seen`, so a test
can tell which source a client asked.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from server_process import ServerContext, ThreadedServer

TOKEN_PATH = "/latest/api/token"
ROLES_PATH = "/latest/meta-data/iam/security-credentials/"
TASK_PATH = "/creds"
SSO_PATH = "/federation/credentials"


@dataclass(frozen=True)
class AwsKeys:
    """A set of AWS credentials; a role's (temporary) ones have a session token."""

    access_key_id: str
    secret_access_key: str
    token: str | None = None

    def document(self) -> bytes:
        """The role's credentials as the instance and task services hand them out."""
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        return json.dumps(
            {
                "Code": "Success",
                "Type": "AWS-HMAC",
                "LastUpdated": now.isoformat().replace("+00:00", "Z"),
                "AccessKeyId": self.access_key_id,
                "SecretAccessKey": self.secret_access_key,
                "Token": self.token,
                "Expiration": (now + dt.timedelta(hours=6)).isoformat().replace("+00:00", "Z"),
            }
        ).encode()

    def sso_document(self) -> bytes:
        """The role's credentials as the SSO portal hands them out (expiry in epoch milliseconds)."""
        expiration = int((dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)).timestamp() * 1000)
        credentials = {"accessKeyId": self.access_key_id, "secretAccessKey": self.secret_access_key, "sessionToken": self.token, "expiration": expiration}
        return json.dumps({"roleCredentials": credentials}).encode()


@dataclass(frozen=True)
class Asked:
    """One request the server answered (header names in lower case)."""

    method: str
    path: str
    headers: dict[str, str]
    status: int


class MetadataServer(ServerContext[str]):
    """Instance metadata with IMDSv2 session tokens (a credentials GET without the token it
    handed out gets 401, as on EC2), which also tells the instance's region; the task endpoint at `/creds`, which checks
    `AWS_CONTAINER_AUTHORIZATION_TOKEN` when `task_authorization` is set; the SSO portal, which
    hands `sso_role` out for the SSO access token `sso_access_token` (else 401)."""

    def __init__(
        self,
        *,
        instance_role: AwsKeys | None = None,
        task_role: AwsKeys | None = None,
        role_name: str = "apilake-writer",
        instance_region: str = "ap-southeast-2",
        task_authorization: str | None = None,
        sso_role: AwsKeys | None = None,
        sso_access_token: str = "",
    ) -> None:
        self.instance_role = instance_role
        self.task_role = task_role
        self.role_name = role_name
        self.instance_region = instance_region
        self.task_authorization = task_authorization
        self.sso_role = sso_role
        self.sso_access_token = sso_access_token
        self.session_token = "imds-session-token-5e1f"
        self.seen: list[Asked] = []
        self._server: ThreadedServer | None = None

    def answer(self, method: str, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
        path = urlsplit(target).path
        if self.instance_role is not None and path.startswith("/latest/"):
            if method == "PUT":
                return (200, self.session_token.encode()) if path == TOKEN_PATH and "x-aws-ec2-metadata-token-ttl-seconds" in headers else (400, b"")
            if headers.get("x-aws-ec2-metadata-token") != self.session_token:
                return 401, b""
            if path == ROLES_PATH:
                return 200, self.role_name.encode()
            if path == ROLES_PATH + self.role_name:
                return 200, self.instance_role.document()
            if path == "/latest/meta-data/placement/region":
                return 200, self.instance_region.encode()
            if path.rstrip("/") == "/latest/meta-data/placement/availability-zone":
                return 200, f"{self.instance_region}a".encode()
        if self.task_role is not None and method == "GET" and path == TASK_PATH:
            if self.task_authorization is not None and headers.get("authorization") != self.task_authorization:
                return 401, b""
            return 200, self.task_role.document()
        if self.sso_role is not None and method == "GET" and path == SSO_PATH:
            query = parse_qs(urlsplit(target).query)
            if headers.get("x-amz-sso_bearer_token") != self.sso_access_token or query.get("role_name") != [self.role_name]:
                return 401, b""
            return 200, self.sso_role.sso_document()
        return 404, b""

    def start(self) -> str:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def reply(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, body = server.answer(self.command, self.path, headers)
                server.seen.append(Asked(self.command, self.path, headers, status))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = reply

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                pass

        self._server = ThreadedServer(Handler)
        return self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
