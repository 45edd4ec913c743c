"""dashgate.aws.Endpoint against local servers: bounded waits, a kept-alive connection, error answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dashgate.aws import AwsError, Endpoint


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")


class Recorder(BaseHTTPRequestHandler):
    """Answers each POST with the server's next answer; may drop the connection afterwards without
    saying so (as a service does with a connection left idle)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.client_address, self.headers, body))
        status, payload = self.server.answer
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = self.server.drop_after_answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.requests, httpd.answer, httpd.drop_after_answer = [], (200, {"MessageId": "m-1"}), False
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


def endpoint(server: ThreadingHTTPServer, **kwargs) -> Endpoint:
    return Endpoint(f"http://127.0.0.1:{server.server_port}", service="sqs", region="eu-west-1", **kwargs)


def test_requests_are_signed_and_share_one_connection(server: ThreadingHTTPServer) -> None:
    client = endpoint(server)

    answers = [client.post_json("/", {"n": n}, headers={"X-Amz-Target": "AmazonSQS.SendMessage"}) for n in range(3)]

    assert answers == [{"MessageId": "m-1"}] * 3
    assert len({address for address, _, _ in server.requests}) == 1  # kept alive
    headers = server.requests[0][1]
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID/")
    assert "x-amz-target" in headers["Authorization"] and headers["Host"] == f"127.0.0.1:{server.server_port}"


def test_a_connection_the_server_dropped_while_idle_is_replaced_once(server: ThreadingHTTPServer) -> None:
    server.drop_after_answer = True
    client = endpoint(server)

    client.post_json("/", {"n": 1})
    time.sleep(0.1)  # the server has closed its side by now
    second = client.post_json("/", {"n": 2})

    assert second == {"MessageId": "m-1"} and len(server.requests) == 2
    assert len({address for address, _, _ in server.requests}) == 2


def test_an_error_answer_is_an_aws_error_with_its_code(server: ThreadingHTTPServer) -> None:
    server.answer = (400, {"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "The queue does not exist."})

    with pytest.raises(AwsError) as raised:
        endpoint(server).post_json("/", {})

    assert raised.value.status == 400 and raised.value.code == "QueueDoesNotExist"


def test_a_silent_server_costs_one_timeout_not_more() -> None:
    # GIVEN a server that accepts connections (the kernel's backlog) and never answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = Endpoint(f"http://127.0.0.1:{silent.getsockname()[1]}", service="sqs", region="eu-west-1",
                          timeout=0.5)
        started = time.monotonic()

        with pytest.raises(AwsError, match="unreachable"):
            client.post_json("/", {})

    assert time.monotonic() - started < 1.5  # TimeoutError is not retried
