"""Behaves like QEMU to the manager, without a guest: it is a process that
runs until signalled, serves the console socket it was given (and says
something on it), and holds the forwarded host port. STANDIN_IGNORE_TERM=1
makes it ignore SIGTERM, as a hung QEMU would."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time


def option(argv: list[str], flag: str, prefix: str) -> str:
    for index, word in enumerate(argv[:-1]):
        if word == flag and argv[index + 1].startswith(prefix):
            return argv[index + 1]
    return ""


def serve_console(path: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    while True:
        connection, _ = server.accept()
        connection.sendall(b"stand-in: booted\n")


def main() -> None:
    argv = sys.argv[1:]
    if os.environ.get("STANDIN_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    chardev = option(argv, "-chardev", "socket,")
    path = next(p.split("=", 1)[1] for p in chardev.split(",") if p.startswith("path="))
    threading.Thread(target=serve_console, args=(path,), daemon=True).start()
    netdev = option(argv, "-netdev", "user,")
    forward = next(p for p in netdev.split(",") if p.startswith("hostfwd="))
    port = int(forward.split(":")[2].split("-")[0])
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen(1)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
