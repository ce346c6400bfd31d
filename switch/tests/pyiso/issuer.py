"""An independent issuer host (pyiso8583) for the switch's upstream tests.

Usage: issuer.py HOST:PORT SPEC [LENGTH_HEADER]
  SPEC: default (the switch's `ascii` profile) | default_ascii (`ascii-hex`)
  LENGTH_HEADER: binary2 (default) | ascii4

Prints the bound port on stdout as its first line (so PORT may be 0), then
serves until killed, one thread per connection, answering every request in
the order read:
  0100/0101 -> 0110, 0200/0201 -> 0210: F39 00 and a 6-digit F38
  0120/0121 -> 0130, 0220/0221 -> 0230, 0420/0421 -> 0430: F39 00
  0800 -> 0810: F39 00, F70 echoed
Answers echo F7, F11, F32, F37 and F41 when present. Responses it receives
are ignored; a message it cannot decode closes that connection.
"""
import itertools
import socket
import struct
import sys
import threading

import iso8583
from iso8583.specs import default, default_ascii

HOST, PORT = sys.argv[1].rsplit(":", 1)
SPEC = {"default": default, "default_ascii": default_ascii}[sys.argv[2]]
HEADER = sys.argv[3] if len(sys.argv) > 3 else "binary2"
if HEADER not in ("binary2", "ascii4"):
    sys.exit(f"length header {HEADER!r}: expected binary2 or ascii4")
ECHOED = ("7", "11", "32", "37", "41")
APPROVALS = itertools.count(1)
APPROVALS_LOCK = threading.Lock()


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_frame(sock):
    head = recv_exact(sock, 2 if HEADER == "binary2" else 4)
    if head is None:
        return None
    length = struct.unpack(">H", head)[0] if HEADER == "binary2" else int(head.decode("ascii"))
    return recv_exact(sock, length)


def frame(raw):
    if HEADER == "binary2":
        return struct.pack(">H", len(raw)) + bytes(raw)
    return b"%04d" % len(raw) + bytes(raw)


def answer(req):
    mti = req["t"]
    if len(mti) != 4 or not mti.isdigit() or int(mti[2]) % 2 != 0:
        return None  # a response (e.g. 0810 to an echo of ours): not answered
    resp = {"t": mti[:2] + str(int(mti[2]) + 1) + "0", "39": "00"}
    for f in ECHOED:
        if f in req:
            resp[f] = req[f]
    if mti[:3] in ("010", "020"):
        with APPROVALS_LOCK:
            resp["38"] = "%06d" % (next(APPROVALS) % 1_000_000)
    if mti[:3] == "080" and "70" in req:
        resp["70"] = req["70"]
    return resp


def serve(conn):
    try:
        exchange(conn)
    except (OSError, ValueError) as e:
        print(f"connection ended: {e}", file=sys.stderr, flush=True)
    finally:
        conn.close()


def exchange(conn):
    while True:
        body = read_frame(conn)
        if body is None:
            return
        try:
            req, _ = iso8583.decode(body, SPEC)
        except iso8583.DecodeError as e:
            print(f"closing a connection: {e}", file=sys.stderr, flush=True)
            return
        resp = answer(req)
        if resp is not None:
            raw, _ = iso8583.encode(resp, SPEC)
            conn.sendall(frame(raw))


def main():
    server = socket.create_server((HOST, int(PORT)))
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
