"""The contract's lifecycle extensions from an independent ISO 8583
implementation (pyiso8583): an incremental authorization (0100 with F90)
and partial captures (0220 with F48 subelement 22 = 1), so F90 on an 0100
and F48.22 are encoded by someone else's code.

Usage: lifecycle.py HOST:PORT SPEC   (SPEC: default | default_ascii)
Prints one JSON object per exchange:
{"name": ..., "mti": ..., "39": ..., "38": ..., "4": ...}.
"""
import json
import socket
import struct
import sys

import iso8583
from iso8583.specs import default, default_ascii

HOST, PORT = sys.argv[1].rsplit(":", 1)
SPEC = {"default": default, "default_ascii": default_ascii}[sys.argv[2]]
sock = socket.create_connection((HOST, int(PORT)), timeout=10)


def recv_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("switch closed the connection")
        buf += chunk
    return buf


def call(name, doc):
    raw, _ = iso8583.encode(doc, SPEC)
    sock.sendall(struct.pack(">H", len(raw)) + bytes(raw))
    (length,) = struct.unpack(">H", recv_exact(2))
    resp, _ = iso8583.decode(recv_exact(length), SPEC)
    print(json.dumps({"name": name, "mti": resp["t"], "39": resp.get("39"),
                      "38": resp.get("38"), "4": resp.get("4")}))
    return resp


stan = [500]


def req(mti, **fields):
    stan[0] += 1
    doc = {"t": mti, "7": "1123114959", "11": "%06d" % stan[0],
           "41": "DEMO0001", "42": "DEMO00000000001", "49": "978"}
    doc.update({k.lstrip("f"): v for k, v in fields.items()})
    return doc


# Not the other script's card: five attempts of one card within 60 s at most.
CARD = {"f2": "4012888888881881", "f14": "2812", "f22": "051", "f25": "00"}

auth = req("0100", f3="000000", f4="000000010000", **CARD)
call("preauth", auth)
f90 = "0100" + auth["11"] + auth["7"] + "0" * 22
call("increment", req("0100", f3="000000", f4="000000005000", f90=f90, **CARD))
# 15,000 authorized, 18,000 with 20% over-capture, in two captures.
call("partial", req("0220", f3="000000", f4="000000009000", f48="22011", f90=f90))
call("over", req("0220", f3="000000", f4="000000009001", f48="22011", f90=f90))
call("final", req("0220", f3="000000", f4="000000009000", f90=f90))
call("after_final", req("0220", f3="000000", f4="000000000001", f48="22011", f90=f90))
call("increment_after_final", req("0100", f3="000000", f4="000000000100", f90=f90, **CARD))
