#!/usr/bin/env python3
"""A webhook receiver with the standard library alone, as a merchant would
write one from docs/webhooks.md: it checks the Switch-Signature header
(HMAC-SHA-256 of "<t>." + body with the endpoint's secret, t within 5
minutes of its own clock), answers 200, and appends one JSON line per
event to a file: id, type, verified, fresh, body.

Usage: webhook_receiver.py PORT OUT_FILE (secret in WEBHOOK_SECRET).
"""

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ["WEBHOOK_SECRET"].encode()
OUT = sys.argv[2]
TOLERANCE_S = 300
BODY_BYTES_MAX = 64 * 1024


def verify(header, body):
    """(verified, fresh) of a Switch-Signature header for body."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t, v1 = parts.get("t", ""), parts.get("v1", "")
    if not t.isdigit():
        return False, False
    want = hmac.new(SECRET, t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, v1), abs(time.time() - int(t)) <= TOLERANCE_S


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        if length > BODY_BYTES_MAX:
            self.send_response(413)
            self.end_headers()
            return
        body = self.rfile.read(length)
        verified, fresh = verify(self.headers.get("Switch-Signature", ""), body)
        event = json.loads(body)
        with open(OUT, "a") as f:
            f.write(json.dumps({"id": event["id"], "type": event["type"],
                                "verified": verified, "fresh": fresh,
                                "body": body.decode()}) + "\n")
        self.send_response(200 if verified and fresh else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
