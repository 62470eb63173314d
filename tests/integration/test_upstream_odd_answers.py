"""Odd upstream answers through the whole gateway: each reaches the client as a clean
HTTP answer (a 502 in the gateway's error shape, or the upstream's own 304), never as a
dropped connection."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import httpx

from tests.helpers.cli import apply_config, create_key

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "x"}]}


def raw_upstream(answer_for: Callable[[bytes], bytes]) -> int:
    """A keep-alive upstream on a thread: ``answer_for(request head)`` is written back
    for each request (bodies are read by their content-length)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def one(conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                conn.sendall(answer_for(head))

    def serve() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return int(srv.getsockname()[1])


def test_a_status_no_client_can_be_given_is_a_502(home, make_gateway) -> None:
    port = raw_upstream(lambda head: b"HTTP/1.1 799 Odd\r\ncontent-length: 2\r\n\r\n{}")
    apply_config(home, {
        "upstreams": [{"name": "llm", "kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
                       "max_retries": 0},
                      {"name": "triton", "kind": "v2", "base_url": f"http://127.0.0.1:{port}",
                       "max_retries": 0}],
        "routes": [{"name": "chat", "variants": [{"upstream": "llm", "model": "m"}]},
                   {"name": "tensors", "variants": [{"upstream": "triton", "model": "m"}]}],
    })
    key = create_key(home)
    server = make_gateway()
    auth = {"Authorization": f"Bearer {key}"}
    chat = httpx.post(server.url + "/v1/chat/completions", headers=auth, json=CHAT, timeout=10)
    assert chat.status_code == 502 and chat.json()["error"]["type"] == "upstream_error"
    v2 = httpx.get(server.url + "/v2/models/tensors", headers=auth, timeout=10)
    assert v2.status_code == 502 and "failed" in v2.json()["error"]


def test_a_not_modified_answer_reaches_the_client_whole(home, make_gateway) -> None:
    # RFC 9110 lets a 304 carry the entity's Content-Length; it has no body all the same.
    def answer(head: bytes) -> bytes:
        if b"if-none-match" in head.lower():
            return b'HTTP/1.1 304 Not Modified\r\netag: "v1"\r\ncontent-length: 17\r\n\r\n'
        return (b'HTTP/1.1 200 OK\r\netag: "v1"\r\ncontent-type: application/json\r\n'
                b'content-length: 17\r\n\r\n{"name":"m","x":1}'[:-1])
    port = raw_upstream(answer)
    apply_config(home, {
        "upstreams": [{"name": "triton", "kind": "v2", "base_url": f"http://127.0.0.1:{port}"}],
        "routes": [{"name": "tensors", "variants": [{"upstream": "triton", "model": "m"}]}],
    })
    key = create_key(home)
    server = make_gateway()
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(timeout=10) as client:  # one keep-alive connection for both
        plain = client.get(server.url + "/v2/models/tensors", headers=auth)
        assert plain.status_code == 200 and plain.content == b'{"name":"m","x":1'
        cached = client.get(server.url + "/v2/models/tensors",
                            headers={**auth, "If-None-Match": '"v1"'})
        assert cached.status_code == 304 and cached.content == b""
        again = client.get(server.url + "/v2/models/tensors", headers=auth)
        assert again.status_code == 200  # the client's connection survived the 304
