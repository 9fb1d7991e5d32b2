"""The worker's publisher over a real socket: one keep-alive connection for many
publishes, and a new one when the server closed the old."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.credentials import ReadOnlyCredentials

from chalicelib.appsync_publish import AppSyncPublisher

FRAME = {"v": 1, "streamId": "s", "seq": 0, "type": "start", "model": "m"}


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client or we close
    peers: list[tuple[str, int]] = []
    close_next = False

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        Recorder.peers.append(self.client_address)
        body = json.dumps({"data": {"publishFrames": {"streamId": "s"}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if Recorder.close_next:
            Recorder.close_next = False
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Recorder.peers = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/graphql"
    httpd.shutdown()
    httpd.server_close()


def publisher(url: str) -> AppSyncPublisher:
    return AppSyncPublisher(url, "us-east-1", lambda: ReadOnlyCredentials("a", "b", None))


def test_publishes_share_one_keep_alive_connection(server):
    pub = publisher(server)
    for seq in range(20):
        pub.publish("s", "alice", [{**FRAME, "seq": seq}])
    assert len(Recorder.peers) == 20
    assert len(set(Recorder.peers)) == 1


def test_a_connection_the_server_closed_is_replaced(server):
    pub = publisher(server)
    pub.publish("s", "alice", [FRAME])
    Recorder.close_next = True
    pub.publish("s", "alice", [FRAME])
    pub.publish("s", "alice", [FRAME])
    assert len(Recorder.peers) == 3
    assert Recorder.peers[0] == Recorder.peers[1] != Recorder.peers[2]
