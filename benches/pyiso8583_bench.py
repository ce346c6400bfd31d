#!/usr/bin/env python3
"""pyiso8583 on the same bytes as `benches/benches/codec.rs`.

    python3 benches/pyiso8583_bench.py            # measure decode and encode
    python3 benches/pyiso8583_bench.py --write    # (re)write benches/data/*.bin

The messages are `benches/data/{0100,0200,0800}.bin` (profile `ascii`,
pyiso8583 spec `default`); `--write` encodes them from the dicts below with
pyiso8583, so the Rust benchmarks and this script read identical bytes.
Prints one line per operation: nanoseconds per call, best of 5 runs.
"""
import os
import sys
import timeit

import iso8583
from iso8583.specs import default

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

F55 = "9F02060000000030009F2608A1B2C3D4E5F607085F2A0209788202580095050000000000"

MESSAGES = {
    # A typical authorization: 16 fields, F48 (ECI 07) and F55 (EMV) included.
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
}


def write():
    os.makedirs(DATA, exist_ok=True)
    for name, doc in MESSAGES.items():
        data, _ = iso8583.encode(dict(doc), default)
        with open(os.path.join(DATA, name + ".bin"), "wb") as f:
            f.write(bytes(data))


def ns_per_call(fn, number):
    best = min(timeit.repeat(fn, number=number, repeat=5))
    return best / number * 1e9


def measure():
    print(f"pyiso8583 {iso8583.__version__}, Python {sys.version.split()[0]}")
    for name in MESSAGES:
        with open(os.path.join(DATA, name + ".bin"), "rb") as f:
            wire = f.read()
        doc, _ = iso8583.decode(bytearray(wire), default)
        again, _ = iso8583.encode(dict(doc), default)
        assert bytes(again) == wire, f"{name}: pyiso8583 does not re-encode the same bytes"
        dec = ns_per_call(lambda: iso8583.decode(bytearray(wire), default), 20000)
        # encode() pops keys from its argument, so each call gets a copy
        # (dict(doc) is part of the measured cost, about 1% of it).
        enc = ns_per_call(lambda: iso8583.encode(dict(doc), default), 20000)
        print(f"decode {name} {dec:.0f} ns")
        print(f"encode {name} {enc:.0f} ns")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
    else:
        measure()
