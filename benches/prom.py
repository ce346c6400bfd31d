#!/usr/bin/env python3
"""Reads Prometheus text scrapes for the bench scripts (standard library only).

  prom.py value SCRAPE NAME [LABEL=VALUE]   sum of NAME's samples with those labels
  prom.py quantile BEFORE AFTER NAME Q [LABEL=VALUE]
      the Q quantile of histogram NAME over what was observed between two
      scrapes (bucket counts subtracted), interpolated linearly within its
      bucket as Prometheus' histogram_quantile does; then the count and the
      share of observations at or below each of 0.1 s and 1 s, as
      "QUANTILE COUNT LE_0.1 LE_1" ("nan" when nothing was observed).
"""

import math
import re
import sys

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? ([^ ]+)')


def samples(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            labels = dict(re.findall(r'([a-zA-Z_]+)="([^"]*)"', m.group(3) or ""))
            yield m.group(1), labels, float(m.group(4))


def value(path, name, want):
    return sum(
        v
        for n, labels, v in samples(path)
        if n == name and all(labels.get(k) == val for k, val in want.items())
    )


def buckets(path, name, want):
    out = {}
    for n, labels, v in samples(path):
        if n != name + "_bucket":
            continue
        if any(labels.get(k) != val for k, val in want.items()):
            continue
        le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
        out[le] = out.get(le, 0.0) + v
    return out


def quantile(before, after, name, q, want):
    b = buckets(before, name, want) if before != "-" else {}
    a = buckets(after, name, want)
    cum = sorted((le, a[le] - b.get(le, 0.0)) for le in a)
    total = cum[-1][1] if cum else 0.0
    if total <= 0:
        return "nan 0 nan nan"
    rank = q * total
    lower_le, lower_n = 0.0, 0.0
    result = math.inf
    for le, n in cum:
        if n >= rank:
            if math.isinf(le):
                result = lower_le
            else:
                result = lower_le + (le - lower_le) * (rank - lower_n) / max(n - lower_n, 1e-9)
            break
        lower_le, lower_n = le, n
    share = lambda bound: next((n for le, n in cum if le >= bound), total) / total
    return f"{result:.4f} {int(total)} {share(0.1):.4f} {share(1.0):.4f}"


def main(argv):
    if len(argv) >= 4 and argv[1] == "value":
        want = dict(a.split("=", 1) for a in argv[4:])
        print(f"{value(argv[2], argv[3], want):.0f}")
    elif len(argv) >= 6 and argv[1] == "quantile":
        want = dict(a.split("=", 1) for a in argv[6:])
        print(quantile(argv[2], argv[3], argv[4], float(argv[5]), want))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
