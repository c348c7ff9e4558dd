"""A TCP relay between a browser and the server that can hold an answer in
the middle of its stream, so a test acts "while the answer streams" on a
condition (the first words are on the page) instead of racing the tiny
model, which answers in milliseconds.

Once armed, the relay forwards the server's bytes up to the end of the
first server-sent event that carries answer text, then holds everything
after it until release(). sever() closes every browser connection at once
and drops what is held: what the browser sees when the server dies."""

import socket
import threading

CONTENT_MARK = b'"content"'


class GatedProxy:
    def __init__(self, upstream):
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._armed = False
        self._released = threading.Event()
        self._released.set()
        self.held = threading.Event()  # an answer is being held
        self._sockets = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self):
        """Hold the next answer after its first words."""
        with self._lock:
            self._armed = True
            self._released.clear()
            self.held.clear()

    def release(self):
        with self._lock:
            self._armed = False
        self._released.set()

    def sever(self):
        """Closes every connection at once (held bytes are dropped)."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._released.set()

    def close(self):
        self._closed = True
        self._listener.close()
        self.sever()

    def _accept(self):
        while not self._closed:
            try:
                browser, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._upstream)
            except OSError:
                browser.close()
                continue
            with self._lock:
                self._sockets += [browser, server]
            threading.Thread(target=self._pipe, args=(browser, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, browser, True), daemon=True).start()

    def _pipe(self, source, sink, from_server):
        holding = [False]  # this connection's answer is the held one
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if from_server:
                    data = self._gate(sink, data, holding)
                if data:
                    sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _gate(self, sink, data, holding):
        """Forwards through the first text event of an armed answer, then
        waits for release() (or sever()) before the rest goes on."""
        if holding[0]:
            self._released.wait()
            return data
        with self._lock:
            armed = self._armed and not self.held.is_set()
        mark = data.find(CONTENT_MARK) if armed else -1
        if mark < 0:
            return data
        end = data.find(b"\n\n", mark)
        cut = len(data) if end < 0 else end + 2
        sink.sendall(data[:cut])
        holding[0] = True
        self.held.set()
        self._released.wait()
        return data[cut:]
