"""The engine kept busy, through the real server on loopback:

- server-side deadlines (limits.max_request_time_s): a decoding request and
  a queued one end with the server's own DEADLINE_EXCEEDED (the clients'
  deadlines are far later), while the slot is still busy for the queued one;
  the slot is freed, later requests run, and
  iblip_requests_total{code="deadline_exceeded"} counts each; HTTP requests
  get the same limit;
- priorities: with the only KV slot busy, a HIGH request submitted after
  queued LOW ones starts first, and the LOW ones in their arrival order;
- batching: concurrent requests share one vision batch and every decode
  step, and the feature caches turn repeated images and questions into hits.

Every wait ends on an observed state (a first token, a gauge, a histogram
count), never after a guessed time."""

import base64
import http.client
import json
import threading
import time

import grpc

from iblip.v1 import iblip_pb2
from iblip_client import Client
from server_harness import metric, png_bytes, scrape_metrics, start_server, stop_server, wait_until

CLIENT_TIMEOUT_S = 120  # the clients' own deadline: far beyond the server's below
LIMIT_S = 1  # limits.max_request_time_s, and the client deadline, of the deadline tests
# Long enough (the tiny model's context allows ~470 tokens) to outlast the
# limit and the other requests' waits by far, even on a loaded machine.
LONG = dict(max_new_tokens=450, min_new_tokens=450)
# A beam search whose beams fill scheduler.max_running_sequences of a server
# started with BUSY_FLAGS, so that any other request waits: 256 rows a step
# for 450 tokens take 3.8-5.4 s on this 2-core machine when it is idle
# (engine v2: 64 rows took under a second), well past LIMIT_S.
SLOTS = 256
EVERY_SLOT = dict(num_beams=SLOTS, **LONG)
BUSY_FLAGS = ("--scheduler.max-running-sequences", str(SLOTS),
              "--limits.max-num-beams", str(SLOTS))
LOW, HIGH = iblip_pb2.PRIORITY_LOW, iblip_pb2.PRIORITY_HIGH


class Background:
    """Runs `work` on its own thread, recording when it started and ended
    (time.monotonic())."""

    def __init__(self, work, started=None):
        self.started = time.monotonic() if started is None else started
        self.ended_at = None

        def run():
            try:
                work()
            finally:
                self.ended_at = time.monotonic()
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self):
        self._thread.join(CLIENT_TIMEOUT_S)
        assert self.ended_at is not None, "the call did not end"
        return self


class Call(Background):
    """One streaming Generate in the background: what came back, and when."""

    def __init__(self, client, prompt, image=None, **kwargs):
        started = time.monotonic()  # before the call goes out
        self.first_token_at = self.error = None
        self.token_ids = []  # sequence 0's
        self.first_token = threading.Event()  # also set when the call ends
        kwargs.setdefault("timeout", CLIENT_TIMEOUT_S)
        self._stream = client.generate(png_bytes() if image is None else image, prompt,
                                       **kwargs)
        super().__init__(self._read, started)

    def _read(self):
        try:
            for message in self._stream:
                if message.token_ids and self.first_token_at is None:
                    self.first_token_at = time.monotonic()
                    self.first_token.set()
                if message.index == 0:
                    self.token_ids.extend(message.token_ids)
        except grpc.RpcError as error:
            self.error = error
        finally:
            self.first_token.set()

    def wait_first_token(self):
        assert self.first_token.wait(CLIENT_TIMEOUT_S) and self.first_token_at is not None, \
            self.error

    def cancel(self):
        self._stream.cancel()

    @property
    def tokens(self):
        return len(self.token_ids)

    def code(self):
        return self.error.code() if self.error else grpc.StatusCode.OK

    def details(self):
        return self.error.details() if self.error else ""


def gauges(server):
    samples = scrape_metrics(server)
    return tuple(metric(samples, name) for name in (
        "iblip_requests_waiting", "iblip_requests_running", "iblip_kv_cache_blocks_used"))


def waiting(server):
    return metric(scrape_metrics(server), "iblip_requests_waiting")


def delta(after, before, name, **labels):
    return metric(after, name, **labels) - metric(before, name, **labels)


def chat_completion(server, **body):
    """A non-streaming POST /v1/chat/completions: (HTTP status, JSON body)."""
    host, port = server.http_address.rsplit(":", 1)
    image = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    body["messages"] = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "describe"}]}]
    connection = http.client.HTTPConnection(host, int(port), timeout=CLIENT_TIMEOUT_S)
    try:
        connection.request("POST", "/v1/chat/completions", json.dumps(body))
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


class HttpCall(Background):
    """chat_completion in the background: (HTTP status, JSON body), and when."""

    def __init__(self, server, **body):
        self.result = None
        super().__init__(lambda: setattr(self, "result", chat_completion(server, **body)))


def warm_up(client):
    """TorchScript specializes on its first runs of each shape, which then
    take up to a second or so: run the shapes the deadline tests use (one
    row, SLOTS rows) until they run within LIMIT_S."""
    def within_the_limit(**kwargs):
        try:
            return client.generate_unary(png_bytes(), "describe", max_new_tokens=8,
                                         min_new_tokens=8, timeout=LIMIT_S, **kwargs)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
            return None
    for kwargs in ({}, {"num_beams": SLOTS}):
        wait_until(lambda: within_the_limit(**kwargs), timeout=60, what=f"warm-up {kwargs}")


def logged_end_order(server, *ids):
    """The order in which the server ended the requests whose ids start with
    `ids`: the engine thread logs one line as each request ends, before its
    client hears of it (client threads may hear in another order)."""
    def ends():
        lines = {}
        for number, line in enumerate(list(server.log)):
            for request_id in ids:
                # The engine's line (the gRPC side logs cancels of its own).
                if f"] request {request_id}" in line and "prompt_tokens=" in line:
                    lines.setdefault(request_id, number)
        return lines if len(lines) == len(ids) else None
    lines = wait_until(ends, timeout=10, what=f"the log lines of {ids}")
    return sorted(ids, key=lines.get)


def holding_every_slot(server):
    """Nothing waits and one request runs, holding KV blocks: its SLOTS beams
    are every sequence the engine may run at once."""
    waiting_now, running, blocks = gauges(server)
    return waiting_now == 0 and running == 1 and blocks > 0


def test_the_server_deadline_ends_decoding_and_queued_requests_and_frees_the_slots():
    server = start_server(*BUSY_FLAGS, "--limits.max-request-time-s", str(LIMIT_S),
                          "--http.enabled", "true", "--http.port", "0")
    try:
        with Client(server.address) as client:
            warm_up(client)
            before = scrape_metrics(server)
            decoding = Call(client, "describe", request_id="decoding", **EVERY_SLOT)
            wait_until(lambda: holding_every_slot(server), what="the beam search to hold every slot")
            queued = Call(client, "what color is it?", max_new_tokens=4, priority=LOW,
                          request_id="queued")
            wait_until(lambda: waiting(server) == 1, what="the LOW request to queue")
            queued_http = HttpCall(server, max_tokens=4)  # HTTP has no deadline of its own
            wait_until(lambda: waiting(server) == 2, what="the HTTP request to queue")
            # Arrives last but takes every slot when `decoding` is cut, and
            # holds them past the deadlines of the two queued before it.
            overtaking = Call(client, "describe", priority=HIGH, request_id="overtaking",
                              **EVERY_SLOT)
            wait_until(lambda: waiting(server) == 3, what="the HIGH request to queue")
            for call in (decoding, queued, overtaking, queued_http):
                call.join()

            for call in (decoding, overtaking):
                assert call.code() == grpc.StatusCode.DEADLINE_EXCEEDED, call.details()
                # The server's words (a client-side deadline says "Deadline Exceeded").
                assert call.details().startswith("deadline exceeded while generating"), call.details()
                assert LIMIT_S <= call.ended_at - call.started < CLIENT_TIMEOUT_S / 2
            assert queued.code() == grpc.StatusCode.DEADLINE_EXCEEDED, queued.details()
            assert queued.details().startswith("deadline exceeded while queued"), queued.details()
            assert queued.tokens == 0
            status, payload = queued_http.result
            assert status == 504, payload
            assert payload["error"]["message"].startswith("deadline exceeded while queued"), payload
            for call in (queued, queued_http):
                assert LIMIT_S <= call.ended_at - call.started < CLIENT_TIMEOUT_S / 2
            # The queued ones ended at their deadlines, while the slots they
            # waited for were still busy, not once they came free.
            assert logged_end_order(server, "decoding", "queued", "chatcmpl-", "overtaking") == [
                "decoding", "queued", "chatcmpl-", "overtaking"]

            # Everything is released, and the next request runs in full.
            wait_until(lambda: gauges(server) == (0, 0, 0), what="waiting, running, slots at 0")
            answer = client.generate_unary(png_bytes(), "hi", max_new_tokens=4, min_new_tokens=4,
                                           timeout=CLIENT_TIMEOUT_S)
            assert answer.usage.generated_tokens == 4
            after = scrape_metrics(server)
            assert delta(after, before, "iblip_requests_total", code="deadline_exceeded") == 4
            assert delta(after, before, "iblip_requests_total", code="ok") == 1
    finally:
        assert stop_server(server) == 0, "".join(server.log[-20:])


def test_a_client_deadline_stops_the_work_on_the_server():
    """The client's own deadline (grpc-timeout): its library ends the call
    by itself, so only the server's side shows the deadline was honoured:
    no beam search ran to its end (each counts its tokens when it ends),
    the queued request never started, and all left the slots and queue."""
    server = start_server(*BUSY_FLAGS)
    try:
        with Client(server.address) as client:
            warm_up(client)
            before = scrape_metrics(server)
            decoding = Call(client, "describe", timeout=LIMIT_S, **EVERY_SLOT)
            wait_until(lambda: holding_every_slot(server), what="the beam search to hold every slot")
            queued = Call(client, "what color is it?", timeout=LIMIT_S, max_new_tokens=4,
                          priority=LOW)
            wait_until(lambda: waiting(server) == 1, what="the LOW request to queue")
            # Takes the slots when `decoding` ends, past the LOW one's deadline.
            overtaking = Call(client, "describe", timeout=LIMIT_S, priority=HIGH, **EVERY_SLOT)
            wait_until(lambda: waiting(server) == 2, what="the HIGH request to queue")
            for call in (decoding, queued, overtaking):
                assert call.join().code() == grpc.StatusCode.DEADLINE_EXCEEDED, call.details()
            wait_until(lambda: gauges(server) == (0, 0, 0), what="waiting, running, slots at 0")
            after = scrape_metrics(server)
            ended = sum(delta(after, before, "iblip_requests_total", code=code)
                        for code in ("deadline_exceeded", "cancelled"))
            assert ended == 3
            assert delta(after, before, "iblip_requests_total", code="ok") == 0
            assert delta(after, before, "iblip_generated_tokens_total") == 0
            assert delta(after, before, "iblip_decode_batch_size_count") > 0  # they did start
    finally:
        assert stop_server(server) == 0, "".join(server.log[-20:])


def vision_requests(server):
    """Requests the vision stage has taken so far (with the caches off,
    every request passes it, then waits for a KV slot)."""
    return metric(scrape_metrics(server), "iblip_vision_batch_size_sum")


def test_a_high_priority_request_starts_before_low_ones_queued_earlier():
    server = start_server("--scheduler.max-running-sequences", "1",
                          "--cache.vision-cache-mib", "0", "--cache.qformer-cache-mib", "0")
    prompts = ["low 0", "low 1", "high"]
    try:
        with Client(server.address) as client:
            for prompt in prompts:  # first runs of each shape are slow: not while queuing
                client.generate_unary(png_bytes(), prompt, max_new_tokens=2, timeout=60)
            busy = Call(client, "describe", **LONG)
            busy.wait_first_token()  # it holds the only KV slot until cancelled below
            passed_vision = vision_requests(server)
            calls = {}
            for prompt, priority in zip(prompts, (LOW, LOW, HIGH)):  # one at a time
                calls[prompt] = Call(client, prompt, max_new_tokens=2, priority=priority,
                                     request_id=prompt.replace(" ", "-"))
                wait_until(lambda: vision_requests(server) == passed_vision + len(calls),
                           what=f"'{prompt}' to wait for the slot")
            assert busy.ended_at is None, "the busy request ended before all were queued"
            busy.cancel()  # frees the slot
            for call in calls.values():
                assert call.join().code() == grpc.StatusCode.OK, call.details()
            assert busy.join().code() == grpc.StatusCode.CANCELLED
        # One slot: each ran alone, so the order they ended is the order they started.
        assert logged_end_order(server, "low-0", "low-1", "high") == ["high", "low-0", "low-1"]
    finally:
        assert stop_server(server) == 0, "".join(server.log[-20:])


WAVE = 4  # concurrent requests, = the vision batch size below
TOKENS = 6  # per request, exactly (min = max)
COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


def wave(client, prompt):
    """WAVE concurrent requests, one image each: their token ids."""
    calls = [Call(client, prompt, image=png_bytes(color=c), max_new_tokens=TOKENS,
                  min_new_tokens=TOKENS) for c in COLORS]
    for call in calls:
        assert call.join().code() == grpc.StatusCode.OK, call.details()
        assert call.tokens == TOKENS
    return [call.token_ids for call in calls]


def test_concurrent_requests_share_one_vision_batch_and_every_decode_step():
    # A partial vision batch waits up to 5 s (the warm-up waits it out once),
    # so the wave's images, which arrive within milliseconds, go as one batch.
    server = start_server("--scheduler.vision-max-batch-size", str(WAVE),
                          "--scheduler.vision-max-queue-delay-us", "5000000")
    steps = TOKENS - 1  # the first token comes from each request's prefill
    try:
        with Client(server.address) as client:
            def check(before, after, vision_batches, decode_steps_shared=True, **caches):
                assert delta(after, before, "iblip_vision_batch_size_count") == vision_batches
                assert delta(after, before, "iblip_vision_batch_size_sum") == WAVE * vision_batches
                if decode_steps_shared:  # every step decoded all WAVE sequences
                    assert delta(after, before, "iblip_decode_batch_size_count") == steps
                assert delta(after, before, "iblip_decode_batch_size_sum") == WAVE * steps
                for name, expected in caches.items():
                    kind, outcome = name.split("_")
                    assert delta(after, before, f"iblip_cache_{outcome}_total",
                                 cache=kind) == expected, name

            m0 = scrape_metrics(server)
            wave(client, "what color is it?")
            m1 = scrape_metrics(server)
            check(m0, m1, vision_batches=1, vision_misses=WAVE, vision_hits=0,
                  qformer_misses=WAVE, qformer_hits=0)
            # The same images, another question: the vision encoder's output
            # is reused; the Q-Former runs, again as one batch.
            computed = wave(client, "describe the image.")
            m2 = scrape_metrics(server)
            check(m1, m2, vision_batches=1, vision_misses=0, vision_hits=WAVE,
                  qformer_misses=WAVE, qformer_hits=0)
            # Repeated: no vision stage at all. (Requests then reach the
            # engine one by one, so decode steps need not be shared.)
            assert wave(client, "describe the image.") == computed
            m3 = scrape_metrics(server)
            check(m2, m3, vision_batches=0, decode_steps_shared=False, vision_misses=0,
                  vision_hits=0, qformer_misses=0, qformer_hits=WAVE)
    finally:
        assert stop_server(server) == 0, "".join(server.log[-20:])
