"""Writes the fuzzers' seed corpora (tests/fuzz/corpus/<target>/), committed
so every fuzzing run starts from the same, meaningful inputs: one small file
per image format and mode, prompts in several scripts, valid and edge-case
requests, chat bodies. Re-run after changing what the targets read:

    PYTHONPATH=build/python /usr/bin/python3 tests/fuzz/make_seed_corpus.py
"""

import hashlib
import io
import json
import os

from PIL import Image

from iblip.v1 import iblip_pb2

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def encoded(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def images():
    rgb = Image.new("RGB", (7, 5), (200, 30, 40))
    rgb.putpixel((3, 2), (10, 250, 30))
    yield "rgb.png", encoded(rgb, "PNG")
    yield "rgba.png", encoded(rgb.convert("RGBA"), "PNG")
    yield "gray.png", encoded(rgb.convert("L"), "PNG")
    yield "palette.png", encoded(rgb.convert("P"), "PNG")
    yield "gray16.png", encoded(rgb.convert("L").convert("I"), "PNG")  # 16-bit samples
    yield "baseline.jpg", encoded(rgb, "JPEG", quality=80)
    yield "progressive.jpg", encoded(rgb, "JPEG", quality=80, progressive=True)
    yield "gray.jpg", encoded(rgb.convert("L"), "JPEG")
    yield "cmyk.jpg", encoded(rgb.convert("CMYK"), "JPEG")
    yield "image.gif", encoded(rgb, "GIF")
    yield "image.bmp", encoded(rgb, "BMP")
    yield "image.webp", encoded(rgb, "WEBP", lossless=True)
    yield "image.tiff", encoded(rgb, "TIFF")
    yield "wide.png", encoded(Image.new("RGB", (300, 2), (0, 0, 255)), "PNG")


PROMPTS = [
    "what color is the circle?",
    "Question: how many shapes are there? Short answer:",
    "caf\u00e9 \u65e5\u672c\u8a9e \U0001F600 \u0645\u0631\u062d\u0628\u0627",
    "  leading and trailing spaces  \t\n",
    "[PAD] </s> <s> <unk> special tokens as text",
    "a" * 300,
]


def requests(image_bytes):
    plain = iblip_pb2.GenerateRequest(prompt="what is in the picture?")
    plain.images.add(data=image_bytes)
    yield "plain.pb", plain
    sampled = iblip_pb2.GenerateRequest()
    sampled.CopyFrom(plain)
    p = sampled.parameters
    p.max_new_tokens, p.min_new_tokens, p.temperature, p.top_k, p.top_p = 32, 4, 0.7, 40, 0.9
    p.repetition_penalty, p.seed = 1.2, 99
    p.stop_sequences.extend(["\n", "Question:"])
    yield "sampled.pb", sampled
    beams = iblip_pb2.GenerateRequest()
    beams.CopyFrom(plain)
    beams.parameters.num_beams, beams.parameters.num_return_sequences = 5, 3
    beams.parameters.length_penalty, beams.parameters.early_stopping = 1.5, True
    beams.priority, beams.request_id = 2, "req-1"
    yield "beams.pb", beams
    bad = iblip_pb2.GenerateRequest(prompt="\u00e9" * 10)
    bad.parameters.top_p = 1.5
    yield "bad-top-p.pb", bad
    reference = iblip_pb2.GenerateRequest(prompt="and the shape?")
    reference.images.add(sha256=hashlib.sha256(image_bytes).hexdigest())
    yield "reference.pb", reference


def chat_bodies(image_bytes):
    import base64
    url = "data:image/png;base64," + base64.b64encode(image_bytes).decode()
    image_part = {"type": "image_url", "image_url": {"url": url}}
    first = {"role": "user", "content": [image_part, {"type": "text", "text": "what color is it?"}]}
    yield "single.json", {"model": "demo", "messages": [first]}
    yield "stream.json", {"model": "demo", "stream": True, "stream_options": {"include_usage": True},
                          "temperature": 0.5, "top_p": 0.9, "max_tokens": 16, "stop": ["\n"], "seed": 3,
                          "n": 2, "messages": [first]}
    yield "multi-turn.json", {"messages": [{"role": "system", "content": "be brief"}, first,
                                           {"role": "assistant", "content": "red"},
                                           {"role": "user", "content": "and the shape?"}]}
    # The request chooses whether earlier turns go into the prompt.
    yield "history.json", {"history": "transcript", "messages": [
        first, {"role": "assistant", "content": "red"},
        {"role": "user", "content": "and the shape?"}]}
    yield "remote-url.json", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}
    # The image by reference (Image.sha256), as follow-up turns send it.
    reference = {"type": "image_url",
                 "image_url": {"url": "iblip:sha256:" + hashlib.sha256(image_bytes).hexdigest()}}
    yield "reference.json", {"stream": True, "messages": [
        {"role": "user", "content": [reference, {"type": "text", "text": "what color is it?"}]},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "and the shape?"}]}
    yield "bad-reference.json", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "iblip:sha256:ABC"}}]}]}


# What runtime.num_threads 0 reads: cgroup v2 cpu.max, a v1 quota and
# period (the target splits its input in halves), /proc/self/cgroup.
CGROUP_FILES = {
    "cpu-max": "200000 100000\n",
    "cpu-max-unlimited": "max 100000\n",
    "v1-quota": "-1\n100000\n",
    "proc-cgroup": "12:cpu,cpuacct:/kubepods/pod1/c1\n1:name=systemd:/x\n0::/kubepods.slice/c2\n",
}


def http_request(method, target, body=b"", headers=()):
    if isinstance(body, str):
        body = body.encode()
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1"), b"Host: iblip"]
    lines += [h.encode() for h in headers]
    if body or method == "POST":
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def http_connections(image_bytes):
    """One connection's bytes each (http_request_fuzzer); the key is the
    fuzz target's. The first three ended the process before the rebuild."""
    key = "Authorization: Bearer fuzz-key"
    single = dict(chat_bodies(image_bytes))["single.json"]
    chat = json.dumps(single)
    yield "crash-invalid-utf8-path.http", b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n"
    yield "crash-include-usage-not-bool.http", http_request(
        "POST", "/v1/chat/completions",
        json.dumps({**single, "stream": True, "stream_options": {"include_usage": 1}}), [key])
    deep = "[" * 60000 + "]" * 60000
    yield "crash-nested-n.http", http_request(
        "POST", "/v1/chat/completions", chat[:-1] + ', "n": ' + deep + "}", [key])
    # The same crash within the fuzzing run's -max_len.
    shallow = "[" * 1500 + "]" * 1500
    yield "nested-n-short.http", http_request(
        "POST", "/v1/chat/completions", chat[:-1] + ', "n": ' + shallow + "}", [key])
    yield "chat.http", http_request("POST", "/v1/chat/completions", chat, [key])
    yield "chat-stream-expect.http", http_request(
        "POST", "/v1/chat/completions",
        json.dumps(dict(chat_bodies(image_bytes))["stream.json"]),
        [key, "Expect: 100-continue"])
    yield "pipelined.http", (http_request("GET", "/v1/models", headers=[key])
                             + http_request("HEAD", "/favicon.ico")
                             + http_request("GET", "/?q=1", headers=["Connection: close"]))
    yield "cors-preflight.http", http_request(
        "OPTIONS", "/v1/chat/completions",
        headers=["Origin: https://ok.example", "Access-Control-Request-Method: POST"])
    yield "chunked.http", (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + key.encode()
                           + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                           + b"%x\r\n" % len(chat) + chat.encode() + b"\r\n0\r\n\r\n")
    yield "no-key.http", http_request("POST", "/v1/chat/completions", chat)
    yield "chat-reference.http", http_request(
        "POST", "/v1/chat/completions",
        json.dumps(dict(chat_bodies(image_bytes))["reference.json"]), [key])


def main():
    for name, data in images():
        write("image_fuzzer", name, data)
    for i, text in enumerate(PROMPTS):
        write("lm_tokenizer_fuzzer", f"prompt-{i}", b"\x00" + text.encode())
        write("lm_tokenizer_fuzzer", f"ids-{i}", b"\x01" + text.encode())
        write("wordpiece_fuzzer", f"prompt-{i}", text)
    small = dict(images())["rgb.png"]
    for name, request in requests(small):
        write("request_validator_fuzzer", name, request.SerializeToString())
    for name, body in chat_bodies(small):
        write("chat_request_fuzzer", name, json.dumps(body))
    for name, text in CGROUP_FILES.items():
        write("cpu_limit_fuzzer", name, text)


    for name, data in http_connections(small):
        write("http_request_fuzzer", name, data)


if __name__ == "__main__":
    main()
