"""The HTTP front door under hostile or careless clients: header, URL, body
and JSON limits answered before the body is read; memory of a body of tiny
values; slow and idle clients timed out without keeping anyone else from
being served (the API and /metrics); the connection bound; an access-log
line for every request, refused ones included."""

import contextlib
import re
import threading
import time

import pytest

from http_util import (chat_body, closed_within, connect, exchange, read_response,
                       request_bytes)
from server_harness import scrape_metrics, start_server, stop_server

MAX_CONNECTIONS = 16


@pytest.fixture(scope="module")
def server():
    running = start_server(
        "--http.enabled", "true", "--http.port", "0",
        "--http.max-header-bytes", "4096", "--http.max-url-bytes", "1024",
        "--http.max-json-depth", "16", "--http.max-json-elements", "1000",
        "--http.header-timeout-s", "1", "--http.body-timeout-s", "3",
        "--http.idle-timeout-s", "2", "--http.max-connections", str(MAX_CONNECTIONS))
    yield running
    assert stop_server(running) == 0, "".join(running.log)


def test_header_url_and_body_limits(server):
    big = exchange(server.http_address, "GET", "/v1/models", headers=["X-Big: " + "a" * 5000])
    assert big.status == 431 and "http.max_header_bytes" in big.json()["error"]["message"]
    long_url = exchange(server.http_address, "GET", "/v1/models?" + "q" * 2000)
    assert long_url.status == 414 and "http.max_url_bytes" in long_url.json()["error"]["message"]
    # Content-Length beyond the limit: answered from the header alone, the
    # body never sent.
    with connect(server.http_address) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 40000000\r\n\r\n")
        response, _ = read_response(sock)
    assert response.status == 413 and response.header("connection") == "close"
    assert "http.max_body_bytes" in response.json()["error"]["message"]


def test_json_depth_and_element_bounds(server):
    deep = chat_body()[:-1] + ', "n": ' + "[" * 100 + "]" * 100 + "}"
    response = exchange(server.http_address, "POST", "/v1/chat/completions", deep)
    assert response.status == 400
    assert response.json()["error"]["message"] == \
        "body: JSON nested deeper than 16 levels (http.max_json_depth)"
    many = chat_body()[:-1] + ', "x": [' + ",".join(["0"] * 2000) + "]}"
    response = exchange(server.http_address, "POST", "/v1/chat/completions", many)
    assert response.status == 400
    assert "http.max_json_elements" in response.json()["error"]["message"]


def memory_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def test_a_body_of_tiny_values_costs_about_its_own_size(server):
    pid = server.process.pid
    body = b'{"messages": [' + b"{}," * (27 * 2**20 // 3) + b"{}]}"
    assert len(body) < 29010604  # the default http.max_body_bytes
    before = memory_kib(pid, "VmRSS")
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak
    response = exchange(server.http_address, "POST", "/v1/chat/completions", body, timeout=120)
    peak = memory_kib(pid, "VmHWM")
    assert response.status == 400
    assert "http.max_json_elements" in response.json()["error"]["message"]
    growth = (peak - before) * 1024
    print(f"\n{len(body) / 2**20:.1f} MiB body of {{}}: peak RSS +{growth / 2**20:.1f} MiB "
          f"({growth / len(body):.2f}x the body)")
    assert growth < 2 * len(body)
    # A 28 MiB body is over the default limit: refused from its header.
    with connect(server.http_address) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: %d\r\n\r\n" % (28 * 2**20))
        assert read_response(sock)[0].status == 413


def drip(sock, data, stop):
    """Sends `data` one byte at a time, 0.3 s apart, until `stop` is set."""
    for byte in data:
        if stop.wait(0.3):
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return


@contextlib.contextmanager
def slow_clients(address, count, data):
    """`count` connections, each sending `data` a byte every 0.3 s; closed
    on exit."""
    stop = threading.Event()
    sockets = []
    try:
        for _ in range(count):
            sockets.append(connect(address))
            threading.Thread(target=drip, args=(sockets[-1], data, stop), daemon=True).start()
        yield sockets
    finally:
        stop.set()
        for sock in sockets:
            sock.close()


def timed(what, *args, **kwargs):
    started = time.monotonic()
    result = what(*args, **kwargs)
    return result, time.monotonic() - started


def within_a_second(what, *args, **kwargs):
    result, took = timed(what, *args, **kwargs)
    assert took < 1.0, f"took {took:.2f} s next to slow clients"
    return result


def test_slow_clients_do_not_keep_others_waiting(server):
    """Every connection taken by a slow client: new ones are served anyway
    (one waiting for its header makes room), at once."""
    half = MAX_CONNECTIONS // 2
    body_start = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 100000\r\n\r\n{\"messages\"")
    chat = chat_body(max_tokens=2)
    alone = timed(exchange, server.http_address, "POST", "/v1/chat/completions", chat)[1]
    with slow_clients(server.http_address, half, request_bytes("GET", "/v1/models")), \
            slow_clients(server.http_address, half, b"") as bodies:
        for sock in bodies:  # a body that never comes whole
            sock.sendall(body_start)
        models = within_a_second(exchange, server.http_address, "GET", "/v1/models")
        assert models.status == 200
        within_a_second(scrape_metrics, server)
        # A generation takes what it takes (this machine may be busy): the
        # slow clients add less than a second to it.
        response, took = timed(exchange, server.http_address, "POST", "/v1/chat/completions",
                               chat)
        assert response.status == 200, response.body
        assert took < alone + 1.0, (took, alone)


def test_metrics_stay_scrapeable_whatever_one_client_does(server):
    with slow_clients(server.metrics_address, MAX_CONNECTIONS, request_bytes("GET", "/metrics")), \
            slow_clients(server.metrics_address, 1, b"") as unread:
        for _ in range(20):  # asks, never reads
            unread[0].sendall(request_bytes("GET", "/metrics"))
        samples = within_a_second(scrape_metrics, server)
        assert ("iblip_kv_cache_blocks", ()) in samples


def test_timeouts_close_slow_and_idle_connections(server):
    with slow_clients(server.http_address, 1, request_bytes("GET", "/v1/models")) as (header,), \
            connect(server.http_address) as body, connect(server.http_address) as idle:
        body.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        idle.sendall(request_bytes("GET", "/v1/models"))
        assert read_response(idle)[0].status == 200
        assert not closed_within(idle, 1.0)  # idle_timeout_s is 2
        assert closed_within(header, 5) and closed_within(body, 5) and closed_within(idle, 5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = "".join(server.log)
        if "timed out reading the header (http.header_timeout_s)" in log and \
                "timed out reading the body (http.body_timeout_s)" in log:
            break
        time.sleep(0.05)
    else:
        pytest.fail("no access-log line for the timed-out requests")


def test_when_every_connection_is_busy_a_fast_503():
    server = start_server("--http.enabled", "true", "--http.port", "0",
                          "--http.max-connections", "4")
    held = []
    try:
        for _ in range(4):  # bodies still arriving: busy, so none makes room
            sock = connect(server.http_address)
            held.append(sock)
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                         b"Expect: 100-continue\r\nContent-Length: 1000\r\n\r\n")
            assert read_response(sock)[0].status == 100  # reading the body now
            sock.sendall(b"{")
        started = time.monotonic()
        refused = exchange(server.http_address, "GET", "/v1/models")
        assert refused.status == 503 and time.monotonic() - started < 1.0
        assert "http.max_connections" in refused.json()["error"]["message"]
        assert scrape_metrics(server)  # /metrics has its own bound
        deadline = time.monotonic() + 10
        while not re.search(r'http api \S+ "- -" 503 .*: over http.max_connections',
                            "".join(server.log)):
            assert time.monotonic() < deadline, "the refusal was not logged"
            time.sleep(0.05)
    finally:
        for sock in held:
            sock.close()
        assert stop_server(server) == 0, "".join(server.log)


def test_every_request_is_logged_refused_ones_too(server):
    exchange(server.http_address, "GET", "/v1/models", headers=["X-Big: " + "a" * 5000])
    exchange(server.http_address, "GET", "/nowhere")
    deadline = time.monotonic() + 10
    pattern = re.compile(r'http api 127\.0\.0\.1:\d+ "GET /nowhere" 404 ')
    while not pattern.search("".join(server.log)):
        assert time.monotonic() < deadline, "no access-log line for GET /nowhere"
        time.sleep(0.05)
    assert re.search(r'http api \S+ "GET /v1/models" 431 ', "".join(server.log))
