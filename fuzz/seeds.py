#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/corpus/<target>/ with pyiso8583.

Seeds are encoded by an independent implementation (pyiso8583 `default` for
the `ascii` profile, `default_ascii` for `ascii-hex`), so the fuzzer starts
from messages real peers send. Run from anywhere: `python3 fuzz/seeds.py`.
Crash inputs found later are added by hand, named `crash-<what>`.
"""
import os
import struct

import iso8583
from iso8583.specs import default, default_ascii

HERE = os.path.dirname(os.path.abspath(__file__))

F55 = "9F02060000000030009F2608A1B2C3D4E5F607085F2A0209788202580095050000000000"

MESSAGES = {
    "0100": {
        "t": "0100", "2": "4111111111111111", "3": "000000", "4": "000000003000",
        "7": "1123114959", "11": "000042", "12": "114959", "13": "1123",
        "14": "2812", "22": "051", "25": "59", "37": "332711000042",
        "41": "DEMO0001", "42": "DEMO00000000001", "48": "0103abc420207",
        "49": "978", "55": F55,
    },
    "0200": {
        "t": "0200", "2": "4000000000000002", "3": "000000", "4": "000000012550",
        "7": "1123115000", "11": "000043", "14": "2812", "22": "071", "25": "00",
        "35": "4000000000000002D2812201", "41": "DEMO0002",
        "42": "DEMO00000000001", "49": "840", "52": "0123456789ABCDEF",
    },
    "0800": {"t": "0800", "7": "1123114959", "11": "000001", "70": "301"},
    "0400": {
        "t": "0400", "3": "000000", "4": "000000001000", "7": "1123120000",
        "11": "000044", "41": "DEMO0001", "42": "DEMO00000000001", "49": "978",
        "90": "010000004211231149590000000000000000000000",
        "95": "000000000500000000000000000000000000000000",
    },
    "0110": {
        "t": "0110", "3": "000000", "4": "000000003000", "7": "1123114959",
        "11": "000042", "37": "332711000042", "38": "A1B2C3", "39": "00",
        "41": "DEMO0001", "42": "DEMO00000000001", "49": "978",
    },
    "0200_mac": {
        "t": "0200", "2": "5500000000000004", "3": "200000", "4": "000000000100",
        "11": "000045", "28": "C00000100", "43": "DEMO SHOP                 BERLIN      DE",
        "64": "0011223344556677", "102": "ACCOUNT-1", "128": "8899AABBCCDDEEFF",
    },
}


def encode(doc, spec):
    data, _ = iso8583.encode(dict(doc), spec)
    return bytes(data)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    framed = []
    for name, doc in MESSAGES.items():
        raw = encode(doc, default)
        hexed = encode(doc, default_ascii)
        write("iso_decode_ascii", name, raw)
        write("iso_decode_ascii_hex", name, hexed)
        write("iso_round_trip", name + "_ascii", b"\x00" + raw)
        write("iso_round_trip", name + "_ascii_hex", b"\x01" + hexed)
        framed.append(raw)
    # framing_chunks: config byte, chunk-size count, sizes, stream.
    two = b"".join(struct.pack(">H", len(m)) + m for m in framed[:3])
    write("framing_chunks", "binary2_chunks", bytes([0x00, 3, 1, 7, 200]) + two)
    write("framing_chunks", "binary2_bytewise", bytes([0x00, 0]) + two)
    four = b"".join(b"%04d" % len(m) + m for m in framed[:2])
    write("framing_chunks", "ascii4", bytes([0x01, 2, 3, 50]) + four)
    tpdu = b"".join(struct.pack(">H", len(m) + 5) + b"\x60\x00\x01\x00\x00" + m for m in framed[:2])
    write("framing_chunks", "binary2_tpdu", bytes([0x02, 1, 64]) + tpdu)
    write("framing_chunks", "over_limit", bytes([0x04, 1, 2]) + b"\x00\x65" + b"x" * 101)
    write("framing_chunks", "bad_ascii_header", bytes([0x01, 0]) + b"00x5hello")



def internal_frame(frame_type, request_id, fields):
    """An internal frame: header, then (tag u8, length u16, value) fields."""
    body = b"".join(struct.pack(">BH", t, len(v)) + v for t, v in fields)
    return b"SW\x01" + bytes([frame_type]) + struct.pack(">QI", request_id, len(body)) + body


def internal_seeds():
    """Seeds for internal_decode, from docs/internal-frames.md's examples."""
    u64 = lambda v: struct.pack(">Q", v)
    moto = internal_frame(0x02, 42, [
        (0x20, b"4111111111111111"), (0x21, b"2712"), (0x22, b"123"),
        (0x04, b"ORD-1"), (0x03, struct.pack(">H", 978)), (0x02, u64(2500)),
        (0x05, b"DEMO0001"),
        (0x24, struct.pack(">IQ", 2, 1250) + b"Tea"),
    ])
    write("internal_decode", "authorize_moto", moto)
    response = internal_frame(0x80, 42, [
        (0x40, b"00"), (0x01, u64(1001)), (0x42, b"A1B2C3"), (0x30, b"\x02"),
        (0x03, struct.pack(">H", 978)), (0x43, u64(2500)), (0x44, u64(2500)),
        (0x46, b"411111******1111"),
    ])
    write("internal_decode", "response_approved", response)
    write("internal_decode", "response_format_error", internal_frame(0x80, 7, [
        (0x40, b"30"), (0x41, b"missing required field pan (0x20)")]))
    write("internal_decode", "capture", internal_frame(0x04, 9, [(0x01, u64(1001)), (0x02, u64(2000))]))
    write("internal_decode", "cancel", internal_frame(0x06, 10, [(0x01, u64(1001))]))
    write("internal_decode", "authenticate", internal_frame(0x01, 1, [(0x10, b"BO-0001-0001"), (0x11, b"s3cret-s3cret-s3cret")]))
    write("internal_decode", "two_frames", moto + response)
    h = lambda v: struct.pack(">H", v)
    write("internal_decode", "set_merchant", internal_frame(0x0F, 11, [
        (0x50, b"DEMO00000000001"), (0x58, h(978) + h(840)), (0x59, b"\x14"),
        (0x5A, h(168)), (0x5B, h(0)), (0x5C, b"\x01"), (0x5D, b"\x00"),
        (0x5E, b"Demo")]))
    merchant = (b"DEMO00000000001" + bytes([1, 20]) + h(168) + h(24) + bytes([1, 1])
                + h(978) + h(840) + bytes(60) + b"Demo")
    write("internal_decode", "response_merchant", internal_frame(0x80, 11, [
        (0x40, b"00"), (0x41, b"ok"), (0x5F, merchant)]))
    write("internal_decode", "list_webhook_events", internal_frame(0x11, 12, [
        (0x50, b"DEMO00000000001"), (0x01, u64(1001)), (0x73, b"\x02"),
        (0x35, u64(77)), (0x36, h(50))]))
    write("internal_decode", "set_webhook_endpoint", internal_frame(0x15, 13, [
        (0x74, b"https://shop.example/hooks/switch")]))
    event = (u64(1001) + b"DEMO00000000001" + b"\x02" + struct.pack(">I", 7) + h(503)
             + u64(1764979200) + u64(0) + bytes([20]) + b"evt_0000000000000007"
             + b"payment.captured")
    endpoint = u64(1764979000) + bytes([len("whsec_…x2y3".encode())]) + "whsec_…x2y3".encode() + b"https://shop.example/hooks/switch"
    write("internal_decode", "response_webhooks", internal_frame(0x80, 13, [
        (0x40, b"00"), (0x75, endpoint),
        (0x76, b"whsec_q3J0y0c4aB6xWzQ0mV1n2o3p4q5r6s7t8u9v0w1x2y3"), (0x71, event)]))


if __name__ == "__main__":
    main()
    internal_seeds()
