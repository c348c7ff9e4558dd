"""A small Python client for the iblip.v1 InstructBLIP service.

Stubs are generated from proto/ at build time (build/python); put that
directory and client/python on PYTHONPATH:

    from iblip_client import Client
    with Client("127.0.0.1:50051") as client:
        for chunk in client.generate(open("cat.jpg", "rb").read(), "What is this?"):
            print(chunk.text, end="", flush=True)
"""

import hashlib

import grpc

from iblip.v1 import iblip_pb2, iblip_pb2_grpc

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_PARAMETER_FIELDS = {f.name for f in iblip_pb2.GenerationParameters.DESCRIPTOR.fields}


def build_request(image, prompt="", *, priority=None, request_id="", **parameters):
    """A GenerateRequest from encoded image bytes (or an iblip_pb2.Image, e.g.
    Image(sha256=...)), a prompt and parameters named as in
    GenerationParameters (max_new_tokens=..., temperature=...)."""
    unknown = set(parameters) - _PARAMETER_FIELDS
    if unknown:
        raise TypeError(f"unknown generation parameters: {sorted(unknown)}")
    stop = parameters.pop("stop_sequences", None) or []
    request = iblip_pb2.GenerateRequest(
        images=[image if isinstance(image, iblip_pb2.Image) else iblip_pb2.Image(data=image)],
        prompt=prompt, request_id=request_id,
        parameters=iblip_pb2.GenerationParameters(stop_sequences=list(stop), **parameters))
    if priority is not None:
        request.priority = priority
    return request


class Client:
    """Blocking client over one channel. Methods raise grpc.RpcError."""

    def __init__(self, address, *, timeout=None, channel=None, api_key=None,
                 root_certificates=None, reuse_images=False):
        """`api_key`: sent as 'authorization: Bearer KEY' on every call.
        `root_certificates` (PEM bytes): connect with TLS, trusting them.
        `reuse_images`: an image this client has sent before goes by its
        SHA-256 (Image.sha256) instead of its bytes; when the server answers
        NOT_FOUND (it no longer holds it) the bytes are sent again."""
        self._reuse_images = reuse_images
        self._held_images = set()  # SHA-256s the server accepted
        options = [("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.max_send_message_length", 64 << 20)]
        if channel is None and root_certificates is not None:
            channel = grpc.secure_channel(
                address, grpc.ssl_channel_credentials(root_certificates), options=options)
        self._channel = channel or grpc.insecure_channel(address, options=options)
        self._stub = iblip_pb2_grpc.InstructBlipServiceStub(self._channel)
        self._timeout = timeout
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def generate(self, image, prompt="", **kwargs):
        """Streams GenerateResponse messages. Cancel by closing the iterator."""
        timeout = kwargs.pop("timeout", self._timeout)
        if self._reuse_images and isinstance(image, bytes):
            return self._generate_reusing(image, prompt, timeout, kwargs)
        return self._stub.Generate(build_request(image, prompt, **kwargs), timeout=timeout,
                                   metadata=self._metadata)

    def generate_unary(self, image, prompt="", **kwargs):
        timeout = kwargs.pop("timeout", self._timeout)
        call = lambda source: self._stub.GenerateUnary(  # noqa: E731
            build_request(source, prompt, **kwargs), timeout=timeout, metadata=self._metadata)
        if not (self._reuse_images and isinstance(image, bytes)):
            return call(image)
        digest = hashlib.sha256(image).hexdigest()
        if digest in self._held_images:
            try:
                return call(iblip_pb2.Image(sha256=digest))
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                self._held_images.discard(digest)
        response = call(image)
        self._held_images.add(digest)
        return response

    def _generate_reusing(self, image, prompt, timeout, kwargs):
        digest = hashlib.sha256(image).hexdigest()
        if digest in self._held_images:
            stream = self._stub.Generate(
                build_request(iblip_pb2.Image(sha256=digest), prompt, **kwargs),
                timeout=timeout, metadata=self._metadata)
            try:
                first = next(stream)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                self._held_images.discard(digest)  # evicted: send the bytes
            except StopIteration:
                return
            else:
                yield first
                yield from stream
                return
        stream = self._stub.Generate(build_request(image, prompt, **kwargs), timeout=timeout,
                                     metadata=self._metadata)
        for message in stream:
            self._held_images.add(digest)
            yield message

    def info(self):
        return self._stub.GetModelInfo(iblip_pb2.GetModelInfoRequest(), timeout=self._timeout,
                                       metadata=self._metadata)

    def tokenize(self, text):
        return self._stub.Tokenize(iblip_pb2.TokenizeRequest(text=text), timeout=self._timeout,
                                   metadata=self._metadata)

    def health(self, service=""):
        """True if grpc.health.v1 says SERVING. (Encoded by hand: grpcio ships
        no health stubs here; the request is field 1, the status field 1.)"""
        check = self._channel.unary_unary(_HEALTH_CHECK, request_serializer=None,
                                          response_deserializer=None)
        encoded = service.encode()
        request = (b"\x0a" + bytes([len(encoded)]) + encoded) if encoded else b""
        return check(request, timeout=self._timeout or 5,
                     metadata=self._metadata) == b"\x08\x01"
