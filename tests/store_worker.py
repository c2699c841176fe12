"""A publisher or reader process for the store's crash and concurrency tests.

    python -m tests.store_worker publish SPEC TAG N [--throttle-ms MS] [--lock-ttl S]
    python -m tests.store_worker read SPEC N STOP_FILE OUT_JSON

Every version written here holds keys ``k0..k{N-1}`` whose values are ``TAG:key`` and carries
``{"tag": TAG}`` in its meta, so a reader can tell a mixed answer (values of two versions, or
values that do not belong to the version the store named) from a good one.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.store_support import open_spec


def items(tag: str, n: int, throttle_ms: float = 0.0) -> Iterator[tuple[str, bytes]]:
    """The keys of one version; with a throttle, a pause every 1,000 keys (scoring time)."""
    for i in range(n):
        if throttle_ms and i % 1000 == 0:
            time.sleep(throttle_ms / 1000)
        yield f"k{i}", f"{tag}:k{i}".encode()


def check(values: list[bytes | None], keys: list[str], tag: str) -> bool:
    """True when every value is present and belongs to the version tagged ``tag``."""
    return all(v == f"{tag}:{k}".encode() for v, k in zip(values, keys, strict=True))


def publish(spec: str, tag: str, n: int, throttle_ms: float, lock_ttl: float | None) -> None:
    kw = {"batch_size": 1000} | ({"lock_ttl": lock_ttl} if lock_ttl and spec.startswith("redis")
                                 else {})
    store = open_spec(spec, **kw)
    print("start", flush=True)
    info = store.publish("recs", items(tag, n, throttle_ms), meta={"tag": tag})
    print("done", info.version, flush=True)


def read(spec: str, n: int, stop_file: Path, out: Path) -> None:
    store = open_spec(spec)
    rng = random.Random()
    reads, mixed, errors, versions = 0, 0, [], {}
    while not stop_file.exists():
        keys = [f"k{rng.randrange(n)}" for _ in range(64)]
        try:
            values, info = store.get_many("recs", keys)
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            errors.append(repr(exc))
            continue
        if reads == 0:
            print("ready", flush=True)  # the first read is done: the test may start switching
        reads += 1
        versions[info.version] = versions.get(info.version, 0) + 1
        if not check(values, keys, info.meta.get("tag", "")):
            mixed += 1
    out.write_text(json.dumps({"reads": reads, "mixed": mixed, "errors": errors[:20],
                               "n_errors": len(errors), "versions": versions}))


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pub = sub.add_parser("publish")
    pub.add_argument("spec")
    pub.add_argument("tag")
    pub.add_argument("n", type=int)
    pub.add_argument("--throttle-ms", type=float, default=0.0)
    pub.add_argument("--lock-ttl", type=float, default=None)
    rd = sub.add_parser("read")
    rd.add_argument("spec")
    rd.add_argument("n", type=int)
    rd.add_argument("stop_file", type=Path)
    rd.add_argument("out", type=Path)
    a = p.parse_args()
    if a.cmd == "publish":
        publish(a.spec, a.tag, a.n, a.throttle_ms, a.lock_ttl)
    else:
        read(a.spec, a.n, a.stop_file, a.out)


if __name__ == "__main__":
    sys.exit(main())
