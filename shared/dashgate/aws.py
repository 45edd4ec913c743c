"""AWS calls on the standard library: Signature Version 4 and one kept-alive HTTPS connection per endpoint.

Why not boto3: a cold start pays for every module it imports, and every function must import within
300 ms beyond a bare interpreter (`make bench`). Measured on the development machine, `import boto3`
plus one client costs about 330 ms (1,044 M instructions, counted by callgrind), and `botocore.auth`
alone about 185 ms (496 M); this module adds 72 M instructions to the login function's import, almost
all of them `ssl` loading OpenSSL, which HTTPS needs whatever the client. dashgate makes two
kinds of AWS call, SQS SendMessage on the request path (dashgate.sqs) and SES v2 SendEmail in the
mailer (dashgate.mailer), each one signed JSON POST: that is all this module does.
tests/unit/test_aws_sigv4.py proves each signature equals botocore's `SigV4Auth` for the same request.

Credentials and region are the runtime's, read where every AWS SDK reads them (the Lambda runtime
sets them; they are not dashgate's configuration): AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, or, under SnapStart, which sets no keys, the container credentials endpoint
(AWS_CONTAINER_CREDENTIALS_FULL_URI); AWS_REGION or AWS_DEFAULT_REGION; and the SDKs' endpoint
overrides AWS_ENDPOINT_URL_<SERVICE> and AWS_ENDPOINT_URL (tests point them at moto).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from dashgate.errors import ConfigurationError

#: Seconds each socket operation (connect, send, each read) may take before the call fails: the
#: request path must answer within its own budget even when an AWS endpoint goes silent.
TIMEOUT_SECONDS = 3.0
#: Temporary credentials are fetched again this long before they expire (the SDKs use 5 to 15 minutes).
REFRESH_BEFORE_SECONDS = 300
#: Errors of a kept-alive connection that the other side closed while it was idle: the request was
#: not read, so it is sent again once on a new connection (SQS and SES close idle connections).
STALE_CONNECTION = (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
                    http.client.CannotSendRequest)


class AwsError(Exception):
    """A call that failed: no credentials, the network, or an error answer (`status`, `code`).
    `maybe_done`: the request reached the service and its answer was lost (a timeout or a cut
    connection while waiting): the service may have carried it out, so sending it again may repeat it."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 maybe_done: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.maybe_done = status, code, maybe_done


@dataclass(frozen=True)
class Credentials:
    """An access key, its secret and, for temporary credentials (Lambda's), the session token."""

    access_key: str
    secret_key: str
    token: str | None = None
    expires: float | None = None  # epoch seconds; None: no expiry known

    def fresh(self, now: float) -> bool:
        """Whether these may still be used for a while."""
        return self.expires is None or now < self.expires - REFRESH_BEFORE_SECONDS


_container_cache: dict[str, Credentials] = {}
_container_lock = threading.Lock()


def current_credentials() -> Credentials:
    """The runtime's credentials: the environment's keys, else the container endpoint's (cached)."""
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN") or None)
    uri = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    if not uri:
        raise AwsError("no AWS credentials in the environment")
    with _container_lock:
        cached, now = _container_cache.get(uri), time.time()
        if cached is None or not cached.fresh(now):
            try:
                cached = _container_cache[uri] = _fetch_container_credentials(uri, _container_token())
            except AwsError:
                # Refreshed early, five minutes before they expire: keys that still work are used while
                # the endpoint cannot answer (the next call asks it again), never turned into a 503.
                if cached is None or (cached.expires is not None and now >= cached.expires):
                    raise
        return cached


def _container_token() -> str | None:
    """The container endpoint's authorization token, given inline or in a file (which may change)."""
    path = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    return Path(path).read_text().strip() if path else os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")


def _fetch_container_credentials(uri: str, token: str | None) -> Credentials:
    """GET the container credentials endpoint (the SDKs' "container credential provider")."""
    parts = urlsplit(uri)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("GET", parts.path or "/", headers={"Authorization": token} if token else {})
        response = connection.getresponse()
        data = json.loads(response.read())
        if response.status != 200:
            raise AwsError(f"container credentials: HTTP {response.status}", status=response.status)
        expires = datetime.fromisoformat(data["Expiration"]).timestamp() if data.get("Expiration") else None
        return Credentials(data["AccessKeyId"], data["SecretAccessKey"], data.get("Token"), expires)
    except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
        raise AwsError(f"container credentials: {type(exc).__name__}") from exc
    finally:
        connection.close()


def current_region() -> str:
    """The runtime's region (Lambda sets AWS_REGION)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise ConfigurationError("Set AWS_REGION (the Lambda runtime sets it) to call AWS")
    return region


def endpoint_override(service_id: str) -> str | None:
    """The SDKs' endpoint override for a service (AWS_ENDPOINT_URL_SESV2, ...), else the global one."""
    return os.environ.get(f"AWS_ENDPOINT_URL_{service_id.upper()}") or os.environ.get("AWS_ENDPOINT_URL") or None


def host_of(url: str) -> str:
    """The Host header of a URL: the host, with the port only when it is not the scheme's default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return f"{host}:{parts.port}" if parts.port is not None and parts.port != default else host


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign(method: str, url: str, headers: dict[str, str], body: bytes, *, credentials: Credentials,
         region: str, service: str, now: datetime) -> dict[str, str]:
    """`headers` plus Host, X-Amz-Date, X-Amz-Security-Token (temporary credentials) and Authorization:
    AWS Signature Version 4 over the method, the path, every given header and the body's SHA-256
    (AWS General Reference, "Create a signed AWS API request"). The URL has no query string."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    sent = {"Host": host_of(url), **headers, "X-Amz-Date": stamp}
    if credentials.token:
        sent["X-Amz-Security-Token"] = credentials.token
    canonical_headers = {name.lower(): " ".join(value.split()) for name, value in sent.items()}
    names = sorted(canonical_headers)
    signed_names = ";".join(names)
    canonical_request = "\n".join([
        method.upper(), quote(urlsplit(url).path or "/", safe="/~"), "",
        *(f"{name}:{canonical_headers[name]}" for name in names), "",
        signed_names, hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = f"AWS4{credentials.secret_key}".encode()
    for part in (stamp[:8], region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    sent["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
                             f"SignedHeaders={signed_names}, Signature={signature}")
    return sent


class Endpoint:
    """One AWS service endpoint (scheme://host[:port]) over one kept-alive connection, each request signed."""

    def __init__(self, base_url: str, *, service: str, region: str | None = None,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"Not an AWS endpoint URL: {base_url!r}")
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        self.service = service
        self.region = region or current_region()
        self.timeout = timeout
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # one request at a time on the connection

    def post_json(self, path: str, payload: dict[str, Any], *, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> dict[str, Any]:
        """POST `payload` as JSON and return the JSON answer; AwsError for any failure."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        signed = sign("POST", self.base_url + path, {"Content-Type": content_type, **(headers or {})}, body,
                      credentials=current_credentials(), region=self.region, service=self.service,
                      now=datetime.now(UTC))
        status, reply, error_type = self._exchange(path, signed, body)
        try:
            answer = json.loads(reply) if reply.strip() else {}
        except ValueError:
            answer = {}
        if not 200 <= status < 300:
            # "__type": "com.amazonaws.sqs#QueueDoesNotExist"; x-amzn-ErrorType: "MessageRejected:http://..."
            code = str(error_type or answer.get("__type") or answer.get("code") or "").split(":")[0].rsplit("#", 1)[-1]
            message = str(answer.get("message") or answer.get("Message") or "")[:300]
            raise AwsError(f"{self.service} answered HTTP {status} {code}: {message}".strip(), status=status,
                           code=code or None)
        return answer if isinstance(answer, dict) else {}

    def _exchange(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str | None]:
        """Send one request: status, body and error type header. A connection the server closed while
        idle is replaced once; any other failure closes it and raises AwsError."""
        with self._lock:
            for attempt in (1, 2):
                reused = self._connection is not None
                connection = self._connection or self._connect()
                sent = False
                try:
                    connection.request("POST", path, body=body, headers=headers)
                    sent = True
                    response = connection.getresponse()
                except (OSError, http.client.HTTPException) as exc:
                    self.close()
                    if reused and attempt == 1 and isinstance(exc, STALE_CONNECTION):
                        continue  # closed while idle: the service never read the request
                    if not sent:
                        raise AwsError(f"{self.service} unreachable: {type(exc).__name__}") from exc
                    raise AwsError(f"{self.service} did not answer: {type(exc).__name__}", maybe_done=True) from exc
                try:
                    reply = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    # The status line came: the service has handled the request. Never send it again
                    # (a second message, a second mail); the caller learns it may have been done.
                    self.close()
                    raise AwsError(f"{self.service} answer lost: {type(exc).__name__}", maybe_done=True) from exc
                if response.will_close:
                    self.close()
                return response.status, reply, response.getheader("x-amzn-ErrorType")
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _connect(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.base_url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._connection = kind(parts.hostname or "", parts.port, timeout=self.timeout)
        return self._connection

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
