"""Images by reference (Image.sha256 over gRPC, "iblip:sha256:<hex>" over
HTTP): a client sends an image once and names it by hash afterwards; the
server answers NOT_FOUND naming the hash when it no longer holds it, and
the CLI's chat and the Python client then send the bytes again."""

import hashlib
import json
import os
import subprocess
import urllib.error
import urllib.request

import grpc
import pytest

from server_harness import (BUILD_DIR, metric, png_bytes, scrape_metrics, start_server,
                            stop_server)

CLIENT_BIN = os.path.join(BUILD_DIR, "client", "iblip-client")


@pytest.fixture(scope="module")
def uncached():
    """A server with both feature caches off: it holds no image, so every
    reference is NOT_FOUND."""
    running = start_server("--http.enabled", "true", "--http.port", "0",
                           "--cache.vision-cache-mib", "0", "--cache.qformer-cache-mib", "0")
    yield running
    assert stop_server(running) == 0, "".join(running.log)


@pytest.fixture(scope="module")
def cached():
    running = start_server("--http.enabled", "true", "--http.port", "0")
    yield running
    assert stop_server(running) == 0, "".join(running.log)


def reference(image):
    from iblip.v1 import iblip_pb2
    return iblip_pb2.Image(sha256=hashlib.sha256(image).hexdigest())


def test_a_reference_answers_like_the_bytes_after_one_upload(cached):
    from iblip_client import Client
    image = png_bytes(color=(90, 10, 140))
    with Client(cached.address, timeout=60) as client:
        with pytest.raises(grpc.RpcError) as before_upload:
            client.generate_unary(reference(image), "what is it?", max_new_tokens=4)
        assert before_upload.value.code() == grpc.StatusCode.NOT_FOUND
        digest = hashlib.sha256(image).hexdigest()
        assert before_upload.value.details() == (
            f"images[0].sha256: {digest} is not held by this server; send the data")
        by_bytes = client.generate_unary(image, "what is it?", max_new_tokens=4)
        by_hash = client.generate_unary(reference(image), "what is it?", max_new_tokens=4)
        assert by_hash.sequences[0].token_ids == by_bytes.sequences[0].token_ids
        streamed = list(client.generate(reference(image), "and the color?", max_new_tokens=4))
        assert streamed[-1].usage.generated_tokens > 0


@pytest.mark.parametrize("bad", ["abc", "A" * 64, "g" * 64, "a" * 65, ""])
def test_a_malformed_reference_is_invalid_argument(cached, bad):
    from iblip.v1 import iblip_pb2
    from iblip_client import Client
    with Client(cached.address, timeout=30) as client:
        with pytest.raises(grpc.RpcError) as error:
            client.generate_unary(iblip_pb2.Image(sha256=bad), "hi", max_new_tokens=2)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("images[0].sha256: must be the image's SHA-256")


def test_the_python_client_sends_the_bytes_again_when_the_server_lost_them(uncached):
    from iblip_client import Client
    image = png_bytes(color=(5, 99, 5))
    before = scrape_metrics(uncached)
    with Client(uncached.address, timeout=60, reuse_images=True) as client:
        first = client.generate_unary(image, "what is it?", max_new_tokens=3)
        second = client.generate_unary(image, "what is it?", max_new_tokens=3)
        streamed = list(client.generate(image, "what is it?", max_new_tokens=3))
    assert second.sequences[0].token_ids == first.sequences[0].token_ids
    assert [t for m in streamed for t in m.token_ids] == list(first.sequences[0].token_ids)
    after = scrape_metrics(uncached)
    # Turns 2 and 3 went by reference first (NOT_FOUND), then with the bytes.
    assert (metric(after, "iblip_requests_total", code="not_found")
            - metric(before, "iblip_requests_total", code="not_found")) == 2
    assert (metric(after, "iblip_requests_total", code="ok")
            - metric(before, "iblip_requests_total", code="ok")) == 3


def test_cli_chat_names_the_image_by_hash_and_resends_it_when_needed(uncached, tmp_path):
    image = tmp_path / "chat.png"
    image.write_bytes(png_bytes(color=(1, 2, 250)))
    before = scrape_metrics(uncached)
    result = subprocess.run(
        [CLIENT_BIN, "chat", "--server", uncached.address, "--image", str(image),
         "--max-new-tokens", "3"],
        input="what color is it?\nhow many shapes?\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("model> ") == 2
    assert "NOT_FOUND" not in result.stderr  # handled, not shown
    after = scrape_metrics(uncached)
    assert (metric(after, "iblip_requests_total", code="not_found")
            - metric(before, "iblip_requests_total", code="not_found")) == 1
    assert (metric(after, "iblip_requests_total", code="ok")
            - metric(before, "iblip_requests_total", code="ok")) == 2


def chat(server, url, text="what is it?"):
    body = {"max_tokens": 3, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}]}
    request = urllib.request.Request(f"http://{server.http_address}/v1/chat/completions",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_http_reference_after_a_first_request_with_the_data(cached, uncached):
    import base64
    image = png_bytes(color=(250, 250, 5))
    ref = "iblip:sha256:" + hashlib.sha256(image).hexdigest()
    data = "data:image/png;base64," + base64.b64encode(image).decode()
    status, body = chat(cached, ref)
    assert status == 404 and body["error"]["type"] == "not_found_error"
    assert body["error"]["message"] == (
        f"messages (image_url iblip:sha256): {ref.rsplit(':', 1)[1]} is not held by this "
        "server; send the data")
    status, by_bytes = chat(cached, data)
    assert status == 200, by_bytes
    assert by_bytes["timings"]["time_to_first_token_ms"] > 0
    status, by_hash = chat(cached, ref)
    assert status == 200, by_hash
    assert by_hash["choices"][0]["message"] == by_bytes["choices"][0]["message"]
    # A server that keeps no features never holds it.
    assert chat(uncached, data)[0] == 200
    assert chat(uncached, ref)[0] == 404
    status, bad = chat(cached, "iblip:sha256:1234")
    assert status == 400
    assert bad["error"]["message"].startswith("messages[0].content[0].image_url: must be the")
