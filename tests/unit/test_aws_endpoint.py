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


class RawServer:
    """A socket server scripted request by request: each request read gets the next of `replies`
    (raw bytes; None: never answer), on kept-alive connections. Counts connections and requests."""

    def __init__(self, replies: list[bytes | None]) -> None:
        self.replies, self.connections, self.requests = list(replies), 0, 0
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.socket.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            while True:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests += 1
                reply = self.replies.pop(0) if self.replies else None
                if reply is None:
                    time.sleep(5)  # silent
                    return
                conn.sendall(reply)
                if b"Connection: close" in reply:
                    return

    def close(self) -> None:
        self.socket.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: 2\r\n\r\n{}"


def test_a_silent_server_on_a_kept_alive_connection_costs_one_timeout_and_no_second_send() -> None:
    # GIVEN a connection that served one request, then a server that stops answering on it
    server = RawServer([OK, None])
    client = Endpoint(server.url, service="sqs", region="eu-west-1", timeout=0.5)
    client.post_json("/", {})
    started = time.monotonic()

    # WHEN the next request is sent on it
    with pytest.raises(AwsError, match="did not answer") as raised:
        client.post_json("/", {})

    # THEN it failed after one timeout, and was not sent again on a new connection (TimeoutError is
    # not the sign of a connection closed while idle); the caller learns it may have been carried out
    assert raised.value.maybe_done
    assert time.monotonic() - started < 1.0
    assert server.connections == 1 and server.requests == 2
    server.close()


def test_an_answer_cut_off_after_its_status_line_is_an_error_and_never_sent_again() -> None:
    # GIVEN a kept-alive connection, and a service that handles the next request but whose answer is
    # cut off mid-body (the request was handled: a resend would send a second message or mail)
    cut = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
           b"Connection: close\r\n\r\n{\"Mess")
    server = RawServer([OK, cut, OK])
    client = Endpoint(server.url, service="sqs", region="eu-west-1", timeout=2)
    client.post_json("/", {})

    # WHEN the request's answer is lost
    with pytest.raises(AwsError, match="answer lost") as raised:
        client.post_json("/", {})
    assert raised.value.maybe_done

    # THEN it reached the service once: no retry on a new connection
    time.sleep(0.2)
    assert server.requests == 2 and server.connections == 1
    server.close()


def test_a_service_that_cannot_be_reached_did_nothing() -> None:
    # GIVEN an address where nothing listens
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    client = Endpoint(f"http://127.0.0.1:{port}", service="ses", region="eu-west-1", timeout=0.5)

    # WHEN a request is sent THEN it is an error that says the request never reached the service
    with pytest.raises(AwsError, match="unreachable") as raised:
        client.post_json("/", {})
    assert not raised.value.maybe_done
