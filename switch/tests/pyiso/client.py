"""An independent ISO 8583 client (pyiso8583) for the switch's tests.

Usage: client.py HOST:PORT SPEC   (SPEC: default | default_ascii)
Runs the contract's scenarios and prints one JSON object per exchange:
{"name": ..., "mti": ..., "39": ..., "fields": [...]}.
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
                      "37": resp.get("37"), "38": resp.get("38"),
                      "fields": sorted(k for k in resp if k.isdigit())}))
    return resp


stan = [0]


def req(mti, **fields):
    stan[0] += 1
    doc = {"t": mti, "7": "1123114959", "11": "%06d" % stan[0]}
    doc.update({k.lstrip("f"): v for k, v in fields.items()})
    return doc


CARD = {"f2": "4111111111111111", "f14": "2812", "f22": "051", "f25": "00",
        "f41": "DEMO0001", "f42": "DEMO00000000001", "f49": "978"}

call("echo", {"t": "0800", "7": "1123114959", "11": "999999", "70": "301"})
auth = req("0100", f3="000000", f4="000000010000", **CARD)
# Binary fields are given as hex in both specs (raw bytes on the wire in
# `default`, hex text in `default_ascii`).
auth["52"] = "0102030405060708"
auth["55"] = "9F0206000000010000"
call("preauth", auth)
f90 = "0100" + auth["11"] + auth["7"] + "0" * 22
call("overcapture", req("0220", f3="000000", f4="000000012001", f41="DEMO0001",
                        f42="DEMO00000000001", f49="978", f90=f90))
call("capture", req("0220", f3="000000", f4="000000012000", f41="DEMO0001",
                    f42="DEMO00000000001", f49="978", f90=f90))
sale = req("0200", f3="000000", f4="000000001000", **CARD)
call("sale", sale)
call("refund", req("0200", f3="200000", f4="000000000400", f41="DEMO0001",
                   f42="DEMO00000000001", f49="978", f90="0200" + sale["11"] + sale["7"] + "0" * 22))
bad = dict(CARD, f2="4111111111111112")
call("luhn", req("0100", f3="000000", f4="000000001000", **bad))
call("unknown_original", req("0400", f3="000000", f4="000000001000", f41="DEMO0001",
                             f42="DEMO00000000001", f49="978", f90="0100999998" + "1123114959" + "0" * 22))
