"""The lab cloud's service listener: on each address, TCP PORT answers one line
(`cloud NAME ADDRESS`) and closes, and UDP PORT echoes every datagram (the failover
benchmark's probe). Usage: python -m ctmanager.lab.cloudlisten PORT NAME ADDRESS..."""

from __future__ import annotations

import socket
import socketserver
import sys
import threading


def main(argv: list[str]) -> int:
    port, name, addresses = int(argv[0]), argv[1], argv[2:]
    servers: list[socketserver.BaseServer] = []
    for addr in addresses:
        line = f"cloud {name} {addr}\n".encode()

        class Tcp(socketserver.BaseRequestHandler):
            reply = line

            def handle(self) -> None:
                self.request.sendall(self.reply)

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                sock.sendto(data, self.client_address)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        servers += [socketserver.ThreadingTCPServer((addr, port), Tcp), socketserver.UDPServer((addr, port), Udp)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(f"listening on {', '.join(f'{a}:{port}' for a in addresses)} (tcp, udp echo)", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    sys.exit(main(sys.argv[1:]))
