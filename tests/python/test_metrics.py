"""/metrics on a fresh server: the exposition parses, and its counts match
what the test did (HTTP responses by route and status too); the feature
caches skip the vision stage for images seen before."""

import grpc
import pytest

from http_util import chat_body, exchange
from server_harness import metric, png_bytes, scrape_metrics, start_server, stop_server


@pytest.fixture(scope="module")
def fresh():
    from iblip_client import Client
    running = start_server()
    try:
        with Client(running.address, timeout=30) as client:
            yield running, client
    finally:
        assert stop_server(running) == 0, "".join(running.log)


def test_counts_match_the_requests_and_cache_hits_skip_the_vision_stage(fresh):
    server, client = fresh
    before = scrape_metrics(server)
    # The warm-up is the server's own: it is in no counter or histogram.
    assert metric(before, "iblip_requests_total", code="ok") == 0
    assert metric(before, "iblip_vision_batch_size_count") == 0
    red, blue = png_bytes(color=(200, 30, 30)), png_bytes(color=(30, 30, 200))

    first = client.generate_unary(red, "what color is it?", max_new_tokens=4)
    repeated = client.generate_unary(red, "what color is it?", max_new_tokens=4)
    assert list(repeated.sequences[0].token_ids) == list(first.sequences[0].token_ids)
    client.generate_unary(red, "describe the image.", max_new_tokens=4)  # same image
    streamed = list(client.generate(blue, "what color is it?", max_new_tokens=4))
    assert streamed[-1].usage.generated_tokens >= 1
    with pytest.raises(grpc.RpcError) as error:
        client.generate_unary(red, "hi", max_new_tokens=4, temperature=-1.0)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    after = scrape_metrics(server)
    assert metric(after, "iblip_requests_total", code="ok") == 4
    assert metric(after, "iblip_requests_total", code="invalid_argument") == 1
    assert metric(after, "iblip_time_to_first_token_seconds_count") == 4
    # Rejected before admission: counted by code, not timed.
    assert metric(after, "iblip_request_duration_seconds_count") == 4
    assert metric(after, "iblip_request_generated_tokens_count") == 4
    # red+q1 misses both caches; red+q1 again hits the Q-Former cache; red+q2
    # hits the vision cache; blue misses both.
    assert metric(after, "iblip_cache_hits_total", cache="qformer") == 1
    assert metric(after, "iblip_cache_misses_total", cache="qformer") == 3
    assert metric(after, "iblip_cache_hits_total", cache="vision") == 1
    assert metric(after, "iblip_cache_misses_total", cache="vision") == 2
    # Vision-stage batches: red+q1, red+q2 (Q-Former only), blue.
    assert metric(after, "iblip_vision_batch_size_count") == 3
    assert metric(after, "iblip_cache_bytes", cache="vision") > 0
    tokens = metric(after, "iblip_generated_tokens_total")
    assert tokens == metric(after, "iblip_request_generated_tokens_sum") >= 4
    assert metric(after, "iblip_kv_cache_blocks") > 0
    assert metric(after, "iblip_kv_cache_blocks_used") == 0
    assert metric(after, "iblip_requests_running") == 0
    assert metric(after, "iblip_requests_waiting") == 0


def test_http_responses_are_counted_by_route_and_status():
    server = start_server("--http.enabled", "true", "--http.port", "0")
    try:
        for _ in range(2):
            assert exchange(server.http_address, "GET", "/v1/models").status == 200
        assert exchange(server.http_address, "GET", "/nowhere").status == 404
        assert exchange(server.http_address, "POST", "/v1/chat/completions",
                        chat_body(top_p=2)).status == 400
        assert exchange(server.http_address, "POST", "/v1/chat/completions",
                        chat_body(max_tokens=2)).status == 200
        assert exchange(server.http_address, "GET", "/v1/models",
                        headers=["X-Big: " + "b" * 20000]).status == 431
        scrape_metrics(server)
        samples = scrape_metrics(server)
    finally:
        assert stop_server(server) == 0, "".join(server.log)
    counted = {labels: v for (name, labels), v in samples.items()
               if name == "iblip_http_responses_total"}
    assert counted == {
        (("code", "200"), ("listener", "api"), ("route", "/v1/models")): 2,
        (("code", "404"), ("listener", "api"), ("route", "-")): 1,
        (("code", "400"), ("listener", "api"), ("route", "/v1/chat/completions")): 1,
        (("code", "200"), ("listener", "api"), ("route", "/v1/chat/completions")): 1,
        (("code", "431"), ("listener", "api"), ("route", "-")): 1,
        (("code", "200"), ("listener", "metrics"), ("route", "/metrics")): 1,
    }
    # The chat requests count in the engine's metrics as well.
    assert metric(samples, "iblip_requests_total", code="invalid_argument") == 1
    assert metric(samples, "iblip_requests_total", code="ok") == 1
