"""The OpenAI-compatible HTTP endpoint against the protocol: streamed chunks
concatenate to the non-streamed answer, errors have OpenAI's shape and the
right HTTP code, a request's choice of history mode (and its refusal
where the server fixes it), requests that once ended the process get 4xx, HEAD,
OPTIONS/CORS, Expect: 100-continue and the favicon, and a client that
disconnects cancels its generation (streamed or not)."""

import http.client
import json
import socket
import time

import pytest

from http_util import (chat_body, connect, events, exchange, read_response, request_bytes,
                       user_message)
from server_harness import run_client, scrape_metrics, start_server, stop_server

ORIGIN = "https://chat.example"


@pytest.fixture(scope="module")
def server():
    running = start_server("--http.enabled", "true", "--http.port", "0",
                           "--http.cors-origins", f"{ORIGIN}, https://other.example")
    assert running.http_address
    yield running
    assert stop_server(running) == 0, "".join(running.log)


def post(server, body, raw=False):
    host, port = server.http_address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request("POST", "/v1/chat/completions",
                       body if raw else json.dumps(body),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.getheader("Content-Type"), response.read().decode()


def test_models_lists_the_served_model(server):
    host, port = server.http_address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/v1/models")
    models = json.loads(connection.getresponse().read())
    assert models["object"] == "list" and models["data"][0]["id"] == "iblip/tiny-llama-random"


def test_stream_concatenates_to_the_non_streamed_answer(server):
    body = {"messages": [user_message("describe the image")], "max_tokens": 20, "min_tokens": 20}
    status, _, text = post(server, body)
    assert status == 200, text
    answer = json.loads(text)
    assert answer["object"] == "chat.completion"
    assert answer["usage"]["completion_tokens"] == 20
    status, content_type, streamed = post(server, {**body, "stream": True,
                                                   "stream_options": {"include_usage": True}})
    assert status == 200 and content_type.startswith("text/event-stream")
    payloads = events(streamed)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == answer["choices"][0]["message"]["content"]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "length" and all(f is None for f in finish[:-1])
    assert chunks[-1]["usage"]["completion_tokens"] == 20


def test_multi_turn_and_n_choices(server):
    body = {"messages": [user_message("what is it?"), {"role": "assistant", "content": "a thing"},
                         user_message("and its color?", image=False)],
            "max_tokens": 4, "n": 2, "temperature": 0.8, "seed": 11}
    status, _, text = post(server, body)
    assert status == 200, text
    assert [c["index"] for c in json.loads(text)["choices"]] == [0, 1]


def models_card(server):
    host, port = server.http_address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/v1/models")
    return json.loads(connection.getresponse().read())["data"][0]["iblip"]


def follow_up(history=None):
    """A two-turn conversation whose last question needs the first."""
    body = {"messages": [user_message("what is on the table?"),
                         {"role": "assistant", "content": "a red car"},
                         user_message("what color is it?", image=False)],
            "max_tokens": 2}
    if history is not None:
        body["history"] = history
    return body


def prompt_tokens(server, body):
    status, _, text = post(server, body)
    assert status == 200, text
    return json.loads(text)["usage"]["prompt_tokens"]


def test_a_request_chooses_whether_earlier_turns_are_sent(server):
    card = models_card(server)
    assert card["history"] == "latest" and card["history_selectable"] is True
    # The server counts what it was given: the transcript carries the first
    # question and answer too, the latest turn only the follow-up.
    unchosen = prompt_tokens(server, follow_up())
    latest = prompt_tokens(server, follow_up("latest"))
    transcript = prompt_tokens(server, follow_up("transcript"))
    assert unchosen == latest < transcript, (unchosen, latest, transcript)
    status, _, text = post(server, follow_up("everything"))
    assert status == 400, text
    error = json.loads(text)["error"]
    assert error["param"] == "history" and error["type"] == "invalid_request_error"
    assert error["message"].startswith('history: must be "latest"'), error


def test_a_server_that_fixes_the_history_refuses_the_other_mode():
    fixed = start_server("--http.enabled", "true", "--http.port", "0",
                         "--http.history-selectable", "false")
    try:
        card = models_card(fixed)
        assert card["history"] == "latest" and card["history_selectable"] is False
        status, _, text = post(fixed, follow_up("transcript"))
        assert status == 400, text
        error = json.loads(text)["error"]
        assert error["param"] == "history"
        assert error["message"].startswith(
            "history: this server sends only the latest user message"), error
        # Its own mode, named or not, is served.
        assert prompt_tokens(fixed, follow_up("latest")) == prompt_tokens(fixed, follow_up())
    finally:
        assert stop_server(fixed) == 0, "".join(fixed.log)


@pytest.mark.parametrize("body, code, param", [
    ("{not json", 400, "body"),
    ({"messages": [user_message("no image", image=False)]}, 400, "messages"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]},
     400, "messages[0].content[0].image_url"),
    ({"messages": [user_message("hi")], "temperature": -1}, 400, "temperature"),
    ({"messages": [user_message("hi")], "top_p": 1.5}, 400, "top_p"),
    ({"messages": [user_message("hi")], "max_tokens": 100000}, 400, "max_tokens"),
])
def test_errors_have_openai_shape_and_status(server, body, code, param):
    status, content_type, text = post(server, body, raw=isinstance(body, str))
    assert status == code
    assert content_type == "application/json"
    error = json.loads(text)["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].startswith(param)


def test_unknown_path_and_method(server):
    host, port = server.http_address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/v1/nothing")
    response = connection.getresponse()
    assert response.status == 404 and "error" in json.loads(response.read())
    connection.request("GET", "/v1/chat/completions")
    response = connection.getresponse()
    assert response.status == 405 and response.getheader("Allow") == "POST, OPTIONS"
    assert json.loads(response.read())["error"]["type"] == "invalid_request_error"


def test_a_client_that_disconnects_cancels_its_generation(server):
    before = scrape_metrics(server)
    body = json.dumps({"messages": [user_message("describe")], "max_tokens": 400, "min_tokens": 400,
                       "stream": True}).encode()
    host, port = server.http_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  b"application/json\r\nContent-Length: " + str(len(body)).encode() +
                  b"\r\n\r\n" + body)
        received = b""
        while b"data: " not in received:
            received += s.recv(4096)
        assert b"200 OK" in received
    assert_cancelled_early(server, before, planned_tokens=400)


def assert_cancelled_early(server, before, planned_tokens):
    """One more request ends cancelled, before its `planned_tokens`, and its
    KV cache slots are free again."""
    cancelled = ("iblip_requests_total", (("code", "cancelled"),))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = scrape_metrics(server)
        if after.get(cancelled, 0) > before.get(cancelled, 0):
            break
        time.sleep(0.05)
    assert after.get(cancelled, 0) == before.get(cancelled, 0) + 1
    generated = after[("iblip_generated_tokens_total", ())] - before[("iblip_generated_tokens_total", ())]
    assert generated < planned_tokens  # stopped early, not run to the end
    assert after[("iblip_kv_cache_blocks_used", ())] == 0


def test_the_requests_that_ended_the_process_get_4xx_and_it_serves_on(server):
    with connect(server.http_address) as sock:  # curl --request-target $'/\xff'
        sock.sendall(b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n")
        response, _ = read_response(sock)
    assert response.status == 404
    assert response.json()["error"]["message"] == "path: no such endpoint: /\ufffd"
    usage = exchange(server.http_address, "POST", "/v1/chat/completions",
                     chat_body(stream=True, stream_options={"include_usage": 1}))
    assert usage.status == 400
    assert usage.json()["error"]["param"] == "stream_options.include_usage"
    nested = chat_body()[:-1] + ', "n": ' + "[" * 60000 + "]" * 60000 + "}"
    assert len(nested) > 120000
    response = exchange(server.http_address, "POST", "/v1/chat/completions", nested)
    assert response.status == 400
    assert "http.max_json_depth" in response.json()["error"]["message"]
    assert server.process.poll() is None
    ok = exchange(server.http_address, "POST", "/v1/chat/completions", chat_body(max_tokens=2))
    assert ok.status == 200 and ok.json()["usage"]["completion_tokens"] == 2
    health = run_client("health", "--server", server.address, "--timeout", "10")
    assert health.returncode == 0 and "SERVING" in health.stdout


def test_head_options_cors_expect_continue_and_favicon(server):
    page = exchange(server.http_address, "GET", "/")
    head = exchange(server.http_address, "HEAD", "/", head=True)
    assert head.status == 200 and head.body == b""
    assert head.header("content-length") == str(len(page.body))
    icon = exchange(server.http_address, "GET", "/favicon.ico")
    assert icon.status == 200 and icon.header("content-type") == "image/x-icon"
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(icon.body)).size == (16, 16)

    preflight = exchange(server.http_address, "OPTIONS", "/v1/chat/completions",
                         headers=[f"Origin: {ORIGIN}", "Access-Control-Request-Method: POST",
                                  "Access-Control-Request-Headers: content-type"])
    assert preflight.status == 204
    assert preflight.header("access-control-allow-origin") == ORIGIN
    assert "POST" in preflight.header("access-control-allow-methods")
    models = exchange(server.http_address, "GET", "/v1/models", headers=[f"Origin: {ORIGIN}"])
    assert models.header("access-control-allow-origin") == ORIGIN
    other = exchange(server.http_address, "GET", "/v1/models",
                     headers=["Origin: https://evil.example"])
    assert other.status == 200 and other.header("access-control-allow-origin") is None

    # Expect: 100-continue: the interim answer, then the body, then the result.
    body = chat_body(max_tokens=2).encode()
    with connect(server.http_address) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        interim, rest = read_response(sock)
        assert interim.status == 100 and rest == b""
        sock.sendall(body)
        final, _ = read_response(sock)
    assert final.status == 200 and final.json()["usage"]["completion_tokens"] == 2


def test_a_non_streamed_request_is_cancelled_when_its_client_disconnects(server):
    before = scrape_metrics(server)
    body = chat_body(max_tokens=400, min_tokens=400, n=4, temperature=1.0)
    with connect(server.http_address) as sock:
        sock.sendall(request_bytes("POST", "/v1/chat/completions", body))
        deadline = time.monotonic() + 30
        while scrape_metrics(server).get(("iblip_requests_running", ()), 0) < 1:
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.01)
    assert_cancelled_early(server, before, planned_tokens=4 * 400)
