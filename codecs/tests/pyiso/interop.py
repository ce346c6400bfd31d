#!/usr/bin/env python3
"""pyiso8583 side of codecs/tests/interop_pyiso8583.rs.

Reads commands from stdin, one per line, and answers each with one line:

    spec                       -> "spec <name> <field> <len_type> <max_len> <data_enc>"
                                  lines for `default` and `default_ascii`, then "end"
    decode <spec> <hex>        -> "ok <fields>" or "err <message>"
    encode <spec> <fields>     -> "ok <hex>" or "err <message>"

<fields> is "t=<hex>;2=<hex>;..." where each value is the field's logical
bytes in hex: text as ASCII, binary fields (type b in `default`) as the
bytes themselves, whichever spec carries them.
"""
import sys

try:
    import iso8583
    from iso8583.specs import default, default_ascii
except ImportError:
    print("missing pyiso8583: pip install pyiso8583", flush=True)
    sys.exit(3)

SPECS = {"default": default, "default_ascii": default_ascii}


def binary(field):
    return field.isdigit() and default[field]["data_enc"] == "b"


def to_wire_value(field, raw):
    """Logical bytes -> the value pyiso8583 takes for `field`."""
    return raw.hex().upper() if binary(field) else raw.decode("latin-1")


def from_wire_value(field, value):
    return bytes.fromhex(value) if binary(field) else value.encode("latin-1")


def decode(spec, data):
    doc, _ = iso8583.decode(bytearray(bytes.fromhex(data)), SPECS[spec])
    fields = [(k, v) for k, v in doc.items() if k == "t" or (k.isdigit() and k != "1")]
    fields.sort(key=lambda kv: -1 if kv[0] == "t" else int(kv[0]))
    return ";".join(f"{k}={from_wire_value(k, v).hex()}" for k, v in fields)


def encode(spec, text):
    doc = {}
    for item in text.split(";"):
        k, v = item.split("=")
        doc[k] = to_wire_value(k, bytes.fromhex(v))
    data, _ = iso8583.encode(doc, SPECS[spec])
    return bytes(data).hex()


def main():
    for line in sys.stdin:
        parts = line.split()
        try:
            if parts[0] == "spec":
                for name, spec in SPECS.items():
                    for n in range(1, 129):
                        s = spec[str(n)]
                        print(f"spec {name} {n} {s['len_type']} {s['max_len']} {s['data_enc']}")
                print("end")
            elif parts[0] == "decode":
                print("ok " + decode(parts[1], parts[2]))
            elif parts[0] == "encode":
                print("ok " + encode(parts[1], parts[2]))
            else:
                print("err unknown command")
        except Exception as e:  # report, do not die: the Rust side names the message
            print("err " + repr(e).replace("\n", " "))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
