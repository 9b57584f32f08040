"""A TCP proxy on 127.0.0.1 (port 0) in front of a real server, switchable to fail the way networks do:
``forward`` (pass bytes both ways), ``refuse`` (close each new connection at once), ``hang`` (accept new
connections and never answer). Switching closes the connections open through it, as a server restart
or a cut link would — except to ``stall``: the open connections stay open and take bytes, but nothing
is passed on or answered (a stopped server, whose kernel still acknowledges every packet)."""

from __future__ import annotations

import socket
import threading
from typing import Literal

Mode = Literal["forward", "refuse", "hang", "stall"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "forward"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def set(self, mode: Mode) -> None:
        with self._lock:
            self.mode = mode
            if mode == "stall":
                return
            for s in self._open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._open.clear()

    def stop(self) -> None:
        self._stopped = True
        self.set("refuse")
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
                if mode == "refuse":
                    client.close()
                    continue
                self._open.append(client)
            if mode in ("hang", "stall"):
                continue  # held open, never read, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.mode != "stall":
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass
