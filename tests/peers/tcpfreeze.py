"""A TCP relay on 127.0.0.1 that can stop answering: a network fault injector.

``FreezableRelay(host, port)`` listens on 127.0.0.1 (a free port) and relays each
connection to ``host:port``. ``freeze()`` stops relaying in both directions while
keeping every connection open and accepting new ones: what a client sees of a server
that hangs, or of a path that stops delivering (its queries are sent and accepted,
no answer comes, nothing is closed). ``thaw()`` relays what was held and goes on.

It imitates no vendor's behaviour — only "bytes stop flowing", which a kernel-level
black hole (a dropped route, a firewall) also produces from the client's side until
TCP gives up, minutes later.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class FreezableRelay:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, name="relay-accept", daemon=True)
        self._thread.start()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        self._thread.join(5)

    def __enter__(self) -> FreezableRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="relay-pump",
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()  # frozen: held here, the connection stays open
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
