"""The bad-input catalogue, end to end: one case per class of bad request,
each sent to a real server over gRPC. Every case must get the right status
code and a message that starts with the field at fault; afterwards the
server still serves, and its metrics count every refusal.

(Per-rule coverage of the validator is in request_validator_test.cc, of the
image decoder in image_decoder_test.cc, and both are fuzzed.)"""

import os
import struct
import zlib

import grpc
import pytest

from iblip.v1 import iblip_pb2
from iblip_client import build_request
from server_harness import png_bytes, scrape_metrics, start_server, stop_server

MAX_IMAGE_BYTES = 200_000  # the server below runs with this limit
GENERATE_UNARY = "/iblip.v1.InstructBlipService/GenerateUnary"
GENERATE = "/iblip.v1.InstructBlipService/Generate"


@pytest.fixture(scope="module")
def server():
    running = start_server("--limits.max-image-bytes", str(MAX_IMAGE_BYTES),
                           "--limits.max-image-pixels", "4000000")
    yield running
    assert stop_server(running) == 0, "".join(running.log)


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address, options=[
            ("grpc.max_send_message_length", 64 << 20)]) as channel:
        yield channel


def png_claiming(width, height):
    """A PNG signature and IHDR that claim width x height, and no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))


def image_case(name):
    """A file of the image decoder's test cases (tests/data/images)."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "data", "images", name), "rb") as f:
        return f.read()


def wire(request, replace=None):
    """The request's bytes; `replace` swaps equal-length byte strings, to
    put bytes no protobuf library would serialize (invalid UTF-8)."""
    data = request.SerializeToString()
    if replace:
        old, new = replace
        assert len(old) == len(new) and old in data
        data = data.replace(old, new)
    return data


def request(prompt="what is this?", image=None, **kwargs):
    return build_request(png_bytes() if image is None else image, prompt, **kwargs)


def no_image():
    return iblip_pb2.GenerateRequest(prompt="hi")


def two_images():
    r = request()
    r.images.add(data=png_bytes())
    return r


# (case id, wire bytes, expected code, message prefix)
CASES = [
    ("no-image", wire(no_image()), "INVALID_ARGUMENT", "images"),
    ("too-many-images", wire(two_images()), "INVALID_ARGUMENT", "images"),
    ("empty-image", wire(request(image=b"")), "INVALID_ARGUMENT", "images[0].data"),
    ("image-too-large", wire(request(image=b"\x89PNG" + bytes(MAX_IMAGE_BYTES))),
     "INVALID_ARGUMENT", "images[0].data"),
    ("image-too-many-pixels", wire(request(image=png_claiming(40000, 30000))),
     "INVALID_ARGUMENT", "images[0].data"),
    ("image-not-an-image", wire(request(image=b"%PDF-1.4 not an image")),
     "INVALID_ARGUMENT", "images[0].data"),
    ("image-truncated", wire(request(image=png_bytes()[:60])), "INVALID_ARGUMENT",
     "images[0].data"),
    ("image-header-only", wire(request(image=png_claiming(64, 64))), "INVALID_ARGUMENT",
     "images[0].data"),
    ("image-gif-truncated", wire(request(image=image_case("gif-cut-40pct.gif"))),
     "INVALID_ARGUMENT", "images[0].data: GIF image is truncated"),
    ("image-jpeg-cut-after-scan-start", wire(request(image=image_case("jpeg-cut-after-sos.jpg"))),
     "INVALID_ARGUMENT", "images[0].data: JPEG image is truncated"),
    ("image-gif-frame-beyond-pixel-limit", wire(request(image=image_case("huge-frame.gif"))),
     "INVALID_ARGUMENT", "images[0].data: image is 25000x25000"),
    ("image-tiff-beyond-pixel-limit", wire(request(image=image_case("huge.tiff"))),
     "INVALID_ARGUMENT", "images[0].data: image is 20000x20000"),
    ("image-not-accepted-format", wire(request(image=image_case("image.ppm"))),
     "INVALID_ARGUMENT", "images[0].data: image is in none of the accepted formats"),
    ("prompt-not-utf8", wire(request("say PROMPTXX"), (b"PROMPTXX", b"\xff\xfe\xc3(abcd")),
     "INVALID_ARGUMENT", "prompt"),
    ("prompt-too-long", wire(request("word " * 4000)), "INVALID_ARGUMENT", "prompt"),
    ("stop-sequence-not-utf8",
     wire(request(stop_sequences=["ok", "STOPXX"]), (b"STOPXX", b"\xed\xa0\x80abc")),
     "INVALID_ARGUMENT", "parameters.stop_sequences[1]"),
    ("stop-sequence-empty", wire(request(stop_sequences=[""])), "INVALID_ARGUMENT",
     "parameters.stop_sequences[0]"),
    ("too-many-stop-sequences", wire(request(stop_sequences=["a"] * 9)), "INVALID_ARGUMENT",
     "parameters.stop_sequences"),
    ("request-id-not-utf8", wire(request(request_id="IDXXXX"), (b"IDXXXX", b"\xc0\xafabcd")),
     "INVALID_ARGUMENT", "request_id"),
    ("request-id-bad-characters", wire(request(request_id="a b/c")), "INVALID_ARGUMENT",
     "request_id"),
    ("unknown-priority", wire(request(priority=42)), "INVALID_ARGUMENT", "priority"),
    ("max-new-tokens-zero", wire(request(max_new_tokens=0)), "INVALID_ARGUMENT",
     "parameters.max_new_tokens"),
    ("max-new-tokens-too-many", wire(request(max_new_tokens=1 << 20)), "INVALID_ARGUMENT",
     "parameters.max_new_tokens"),
    ("min-above-max", wire(request(max_new_tokens=4, min_new_tokens=5)), "INVALID_ARGUMENT",
     "parameters.min_new_tokens"),
    ("temperature-negative", wire(request(temperature=-1.0)), "INVALID_ARGUMENT",
     "parameters.temperature"),
    ("temperature-nan", wire(request(temperature=float("nan"))), "INVALID_ARGUMENT",
     "parameters.temperature"),
    ("top-p-above-one", wire(request(top_p=1.5)), "INVALID_ARGUMENT", "parameters.top_p"),
    ("top-k-beyond-vocabulary", wire(request(top_k=1 << 30)), "INVALID_ARGUMENT",
     "parameters.top_k"),
    ("repetition-penalty-zero", wire(request(repetition_penalty=0.0)), "INVALID_ARGUMENT",
     "parameters.repetition_penalty"),
    ("too-many-beams", wire(request(num_beams=64)), "INVALID_ARGUMENT", "parameters.num_beams"),
    ("greedy-with-several-sequences", wire(request(num_return_sequences=3)),
     "INVALID_ARGUMENT", "parameters.num_return_sequences"),
    ("malformed-protobuf", b"\x0a\xff\xff\xff\xff\x0f garbage", "INVALID_ARGUMENT", "request"),
    ("message-too-large", wire(request(image=bytes(MAX_IMAGE_BYTES + (2 << 20)))),
     "RESOURCE_EXHAUSTED", "Received message larger than max"),
]


def call(channel, method, data):
    if method == GENERATE:
        stream = channel.unary_stream(method, request_serializer=None,
                                      response_deserializer=None)(data, timeout=30)
        return list(stream)
    return channel.unary_unary(method, request_serializer=None,
                               response_deserializer=None)(data, timeout=30)


@pytest.mark.parametrize("method", [GENERATE_UNARY, GENERATE], ids=["unary", "stream"])
@pytest.mark.parametrize("case,data,code,prefix", CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_refused_clearly(channel, method, case, data, code, prefix):
    with pytest.raises(grpc.RpcError) as error:
        call(channel, method, data)
    assert error.value.code() == getattr(grpc.StatusCode, code), error.value.details()
    assert error.value.details().startswith(prefix), (case, error.value.details())


def test_the_server_serves_and_counted_every_refusal(server, channel):
    # Runs after the catalogue (pytest keeps file order).
    good = iblip_pb2.GenerateUnaryResponse.FromString(
        call(channel, GENERATE_UNARY, wire(request(max_new_tokens=3))))
    assert good.usage.generated_tokens >= 1
    metrics = scrape_metrics(server)
    invalid = sum(1 for c in CASES if c[2] == "INVALID_ARGUMENT") * 2
    assert metrics[("iblip_requests_total", (("code", "invalid_argument"),))] == invalid
    assert metrics[("iblip_requests_total", (("code", "ok"),))] == 1
    assert metrics[("iblip_requests_running", ())] == 0


def test_tokenize_refuses_text_that_is_not_utf8(channel):
    tokenize = channel.unary_unary("/iblip.v1.InstructBlipService/Tokenize",
                                   request_serializer=None, response_deserializer=None)
    data = wire(iblip_pb2.TokenizeRequest(text="TEXTXX"), (b"TEXTXX", b"\xff\xfeabcd"))
    with pytest.raises(grpc.RpcError) as error:
        tokenize(data, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "text: is not valid UTF-8"
    good = iblip_pb2.TokenizeResponse.FromString(
        tokenize(iblip_pb2.TokenizeRequest(text="hello").SerializeToString(), timeout=30))
    assert good.input_ids
