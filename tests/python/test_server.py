"""The server over gRPC: health, reflection, model info, tokenize, generate.
(Deadlines: test_scheduling.py, where the server's side can be seen.)"""

import urllib.request

import grpc
import pytest

from server_harness import png_bytes
from iblip.v1 import iblip_pb2


def test_health_reports_serving(client):
    assert client.health()
    assert client.health("iblip.v1.InstructBlipService")


def test_reflection_lists_the_service(server):
    # ServerReflectionRequest{list_services: ""} is field 7: 0x3a 0x00.
    with grpc.insecure_channel(server.address) as channel:
        call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                     request_serializer=None, response_deserializer=None)
        responses = list(call(iter([b"\x3a\x00"]), timeout=10))
    assert b"iblip.v1.InstructBlipService" in responses[0]
    assert b"grpc.health.v1.Health" in responses[0]


def test_model_info(client):
    info = client.info()
    assert info.model_id == "iblip/tiny-llama-random"
    assert info.lm_family == iblip_pb2.LANGUAGE_MODEL_FAMILY_LLAMA
    assert info.num_query_tokens == 8
    assert info.image_size == 224
    assert list(info.eos_token_ids) == [1, 2]  # config EOS and tokenizer </s>
    assert info.limits.max_new_tokens > 0
    assert info.default_parameters.max_new_tokens == 64
    assert info.default_parameters.temperature == 0
    assert list(info.accepted_image_formats) == ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WebP"]


def test_tokenize(client):
    result = client.tokenize("What color is the circle?")
    assert result.input_ids[0] == 2  # Vicuna layout: prompts start with </s>
    assert len(result.tokens) == len(result.input_ids)
    assert result.qformer_tokens[0] == "[CLS]" and result.qformer_tokens[-1] == "[SEP]"
    assert "circle" in result.qformer_tokens


def test_stream_concatenates_to_the_unary_answer(client):
    image = png_bytes()
    chunks = list(client.generate(image, "What is in the picture?", max_new_tokens=16))
    final = chunks[-1]
    assert final.HasField("usage") and not final.text and not final.token_ids
    body = chunks[:-1]
    assert body and body[-1].finish_reason in (iblip_pb2.FINISH_REASON_STOP,
                                               iblip_pb2.FINISH_REASON_LENGTH)
    assert all(c.finish_reason == iblip_pb2.FINISH_REASON_UNSPECIFIED for c in body[:-1])
    streamed_ids = [t for c in body for t in c.token_ids]
    streamed_text = "".join(c.text for c in body)
    assert final.usage.generated_tokens == len(streamed_ids)
    assert final.usage.image_tokens == 8
    assert final.usage.time_to_first_token_us <= final.usage.total_time_us

    unary = client.generate_unary(image, "What is in the picture?", max_new_tokens=16)
    assert len(unary.sequences) == 1
    assert list(unary.sequences[0].token_ids) == streamed_ids
    assert unary.sequences[0].text == streamed_text
    assert unary.request_id and chunks[0].request_id and unary.request_id != chunks[0].request_id


def test_client_request_id_is_echoed(client):
    chunks = list(client.generate(png_bytes(), "hi", max_new_tokens=2, request_id="my-id-1"))
    assert {c.request_id for c in chunks} == {"my-id-1"}


def test_sampling_with_a_seed_is_reproducible(client):
    def run():
        response = client.generate_unary(png_bytes(), "Describe the image.", max_new_tokens=12,
                                         temperature=1.0, seed=1234, num_return_sequences=2)
        return [list(s.token_ids) for s in response.sequences], response.usage.seed
    first, seed = run()
    assert run() == (first, 1234)
    assert seed == 1234 and len(first) == 2
    # Really sampled: the two sequences differ (greedy would repeat one).
    assert first[0] != first[1]


@pytest.mark.parametrize("kwargs,field", [
    ({"image": b""}, "images[0].data"),
    ({"image": b"not an image at all"}, "images[0].data"),
    ({"top_p": 1.5}, "parameters.top_p"),
    ({"temperature": -0.5}, "parameters.temperature"),
    ({"max_new_tokens": 100000}, "parameters.max_new_tokens"),
    ({"num_return_sequences": 3}, "parameters.num_return_sequences"),
    ({"stop_sequences": [""]}, "parameters.stop_sequences[0]"),
    ({"priority": 42}, "priority"),
    ({"request_id": "has spaces"}, "request_id"),
])
def test_invalid_arguments_name_the_field(client, kwargs, field):
    image = kwargs.pop("image", png_bytes())
    with pytest.raises(grpc.RpcError) as error:
        list(client.generate(image, "hi", **kwargs))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith(field), error.value.details()
    assert client.health()  # still serving


def test_missing_image_and_too_long_prompt(client):
    stub_request = iblip_pb2.GenerateRequest(prompt="no image")
    with pytest.raises(grpc.RpcError) as error:
        client._stub.GenerateUnary(stub_request, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("images")
    with pytest.raises(grpc.RpcError) as error:
        client.generate_unary(png_bytes(), "word " * 5000)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("prompt")


def test_cancel_mid_stream_leaves_the_server_healthy(client):
    stream = client.generate(png_bytes(), "Describe.", max_new_tokens=200, min_new_tokens=200)
    next(stream)
    stream.cancel()
    with pytest.raises(grpc.RpcError) as error:
        list(stream)
    assert error.value.code() == grpc.StatusCode.CANCELLED
    answer = client.generate_unary(png_bytes(), "hi", max_new_tokens=3)
    assert answer.usage.generated_tokens >= 1


def test_metrics_endpoint(server, client):
    client.generate_unary(png_bytes(), "hi", max_new_tokens=2)
    with urllib.request.urlopen(f"http://{server.metrics_address}/metrics", timeout=10) as r:
        body = r.read().decode()
    assert 'iblip_requests_total{code="ok"}' in body
    assert "iblip_time_to_first_token_seconds_bucket" in body
    assert "iblip_generated_tokens_total" in body


def test_beam_search_returns_ranked_sequences(client):
    response = client.generate_unary(png_bytes(), "Describe.", max_new_tokens=8, num_beams=4,
                                     num_return_sequences=3)
    assert len(response.sequences) == 3
    assert all(s.token_ids for s in response.sequences)
    assert len({tuple(s.token_ids) for s in response.sequences}) == 3  # distinct beams
    streamed = list(client.generate(png_bytes(), "Describe.", max_new_tokens=8, num_beams=4,
                                    num_return_sequences=3))
    by_index = {c.index: list(c.token_ids) for c in streamed if c.token_ids}
    assert by_index == {i: list(s.token_ids) for i, s in enumerate(response.sequences)}
