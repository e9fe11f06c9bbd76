"""Store plugins against real servers: `python bench/stores.py [--quick]`.

Needs the servers of `.ci/services up` (it reads ETCD_ENDPOINTS, S3_ENDPOINT, S3_ACCESS_KEY and
S3_SECRET_KEY from the environment file that script writes).

1. Floors: the median round trip of the raw clients (pyetcd Range/Put/Txn, minio PUT/GET/DELETE
   of 1 KiB), measured in this run.
2. Each store operation through the faasflow store classes, as a ratio of the floor of the
   request(s) it makes.
3. End to end: a 100-node chain and a 100-way fan-in run by the engine on etcd (StateStore) and
   Ceph S3 (DataStore), with no-op nodes. For each: wall time per node, the store requests per
   node (counted on the wire), the time those requests cost at the floor ("store floor"), and
   the ratio of the two. The same shapes on the in-memory stores give the engine's own cost.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pyetcd
from faasflow_etcd.store import EtcdStateStore
from faasflow_minio.store import MinioDataStore
from minio import Minio
from minio.deleteobjects import DeleteObject
from shapes import chain, fan

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.engine import Backends, Engine
from faasflow.plugins import Registry
from faasflow.settings import Settings

WORKERS = 8
PAYLOAD = b"x" * 1024


def median_seconds(fn: Callable[[int], object], n: int, warmup: int = 20) -> float:
    for i in range(warmup):
        fn(i)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


# -- counting requests on the wire -------------------------------------------------------------


class CountingStub:
    """Wraps pyetcd's gRPC KV stub and counts calls by method (Range, Put, Txn, DeleteRange)."""

    def __init__(self, inner: Any, counts: collections.Counter[str]) -> None:
        self._inner = inner
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._counts[f"etcd {name}"] += 1
            return method(*args, **kwargs)

        return counted


def count_etcd(store: EtcdStateStore, counts: collections.Counter[str]) -> None:
    client = store._connection.client()
    client._stubs["kvstub"] = CountingStub(pyetcd.etcdrpc.KVStub(client.channel), counts)


def count_s3(store: MinioDataStore, counts: collections.Counter[str]) -> None:
    http = store._http
    urlopen = http.urlopen

    def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        counts[f"s3 {method}"] += 1
        return urlopen(method, url, *args, **kwargs)

    http.urlopen = counted


# -- 1. floors ---------------------------------------------------------------------------------


def etcd_floors(endpoint: str, n: int) -> dict[str, float]:
    host, port = endpoint.split(",", maxsplit=1)[0].rsplit("/", 1)[-1].rsplit(":", 1)
    client = pyetcd.client(host, int(port))
    prefix = f"bench/{uuid.uuid4().hex}/"
    tx = client.transactions
    client.put(prefix + "k", "0")
    floors = {
        "etcd Range": median_seconds(lambda i: client.get(prefix + "k"), n),
        "etcd Put": median_seconds(lambda i: client.put(prefix + f"p{i}", "v"), n),
        "etcd Txn": median_seconds(
            lambda i: client.transaction(
                compare=[tx.value(prefix + "k") == "0"], success=[tx.put(prefix + "k", "0")],
                failure=[],
            ),
            n,
        ),
        "etcd DeleteRange": median_seconds(lambda i: client.delete(prefix + f"p{i}"), n),
    }
    client.delete_prefix(prefix)
    client.close()
    return floors


def s3_client(options: dict[str, str]) -> Minio:
    return Minio(
        options["endpoint"], options["access_key"], options["secret_key"], secure=False,
        region=options["region"],
    )


def s3_floors(options: dict[str, str], n: int) -> dict[str, float]:
    client = s3_client(options)
    bucket = options["bucket"]
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    prefix = f"bench/{uuid.uuid4().hex}/"

    def get(i: int) -> None:
        response = client.get_object(bucket, prefix + "k")
        response.read()
        response.close()
        response.release_conn()

    client.put_object(bucket, prefix + "k", io.BytesIO(PAYLOAD), len(PAYLOAD))
    floors = {
        "s3 PUT": median_seconds(
            lambda i: client.put_object(
                bucket, prefix + f"p{i}", io.BytesIO(PAYLOAD), len(PAYLOAD)
            ),
            n,
        ),
        "s3 GET": median_seconds(get, n),
        "s3 DELETE": median_seconds(lambda i: client.remove_object(bucket, prefix + f"p{i}"), n),
    }
    client.remove_object(bucket, prefix + "k")
    floors["s3 list+bulk delete 20"] = statistics.median(
        sweep_seconds(lambda: raw_sweep(client, bucket, prefix), client, bucket, prefix)
        for _ in range(max(3, n // 50))
    )
    return floors


def raw_sweep(client: Minio, bucket: str, prefix: str) -> None:
    names = [o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True)]
    errors = list(client.remove_objects(bucket, (DeleteObject(str(n)) for n in names)))
    assert not errors, errors


def sweep_seconds(sweep: Callable[[], None], client: Minio, bucket: str, prefix: str) -> float:
    """Time ``sweep`` over 20 fresh 1 KiB objects under ``prefix``."""
    for i in range(20):
        client.put_object(bucket, f"{prefix}x{i}", io.BytesIO(PAYLOAD), len(PAYLOAD))
    t0 = time.perf_counter()
    sweep()
    return time.perf_counter() - t0


# -- 2. store operations -----------------------------------------------------------------------


def etcd_operations(
    endpoint: str, floors: dict[str, float], n: int
) -> list[tuple[str, float, float]]:
    backend = EtcdStateStore.from_options({"endpoints": endpoint})
    store = backend.scoped("bench", uuid.uuid4().hex)
    store.set("k", "0")
    for i in range(10):
        store.set(f"done--{i}", "1")
    flip = {"v": "0"}

    def update(i: int) -> None:
        new = "1" if flip["v"] == "0" else "0"
        store.update("k", flip["v"], new)
        flip["v"] = new

    rows = [
        ("set", median_seconds(lambda i: store.set("s", "v"), n), floors["etcd Put"]),
        ("get", median_seconds(lambda i: store.get("k"), n), floors["etcd Range"]),
        ("update (CAS)", median_seconds(update, n), floors["etcd Txn"]),
        ("create", median_seconds(lambda i: store.create(f"c{i}", "1"), n), floors["etcd Txn"]),
        ("increment (new key)", median_seconds(lambda i: store.increment(f"n{i}"), n),
         floors["etcd Txn"]),
        ("increment (existing)", median_seconds(lambda i: store.increment("counter"), n),
         2 * floors["etcd Txn"]),
        ("scan (12 keys)", median_seconds(lambda i: store.scan("done--"), n), floors["etcd Range"]),
        ("delete", median_seconds(lambda i: store.delete(f"c{i}"), n), floors["etcd DeleteRange"]),
        # a node's done marker, a fan-in arrival and a consumed input in one step
        ("transaction (2 compares, 2 puts, 1 delete)", median_seconds(
            lambda i: store.transaction(
                {"k": flip["v"], f"t{i}": None},
                {f"t{i}": "1", f"arrived--{i}": "1"},
                [f"done--{i % 10}"],
            ), n), floors["etcd Txn"]),
    ]
    store.cleanup()
    backend.close()
    return rows


def s3_operations(
    options: dict[str, str], floors: dict[str, float], n: int
) -> list[tuple[str, float, float]]:
    backend = MinioDataStore.from_options(options)
    store = backend.scoped("bench", uuid.uuid4().hex)
    store.set("k", PAYLOAD)
    rows = [
        ("set 1 KiB", median_seconds(lambda i: store.set(f"p{i}", PAYLOAD), n), floors["s3 PUT"]),
        ("get 1 KiB", median_seconds(lambda i: store.get("k"), n), floors["s3 GET"]),
        ("delete", median_seconds(lambda i: store.delete(f"p{i}"), n), floors["s3 DELETE"]),
    ]
    client = s3_client(options)
    sweeps = []
    for _ in range(max(3, n // 50)):
        sweep_store = backend.scoped("bench", uuid.uuid4().hex)
        sweeps.append(
            sweep_seconds(sweep_store.cleanup, client, options["bucket"], sweep_store.prefix)
        )
    rows.append(
        ("cleanup (20 objects)", statistics.median(sweeps), floors["s3 list+bulk delete 20"])
    )
    store.cleanup()
    backend.close()
    return rows


# -- 3. end to end -----------------------------------------------------------------------------


def run_flow(
    define: Callable[[Any, Any], None],
    stores: str,
    etcd: str,
    s3: dict[str, str],
    counts: collections.Counter[str],
) -> float:
    settings = Settings(environ={"FAASFLOW_LOCAL_WORKERS": str(WORKERS)})
    registry = Registry.from_settings(settings)
    if stores == "memory":
        state = registry.create(Kind.STATE_STORE, settings, "memory")
        data = registry.create(Kind.DATA_STORE, settings, "memory")
    else:
        state = EtcdStateStore.from_options({"endpoints": etcd})
        data = MinioDataStore.from_options(s3)
        # connect before the clock starts, then count what the run sends
        state.scoped("bench", "warm-up").delete("k")
        data.scoped("bench", "warm-up").delete("k")
        count_etcd(state, counts)
        count_s3(data, counts)
    backends = Backends(
        state, data, registry.create(Kind.TRACER, settings, "none"),
        registry.create(Kind.INVOKER, settings, "local"),
    )
    engine = Engine(Flow(define, name="bench"), settings, backends)
    try:
        t0 = time.perf_counter()
        started = engine.start(b"input")
        record = engine.wait(started.request_id, timeout=600)
        elapsed = time.perf_counter() - t0
    finally:
        engine.close()
    if record is None or record.status != "success":
        raise SystemExit(f"benchmark request did not succeed: {record}")
    return elapsed


def end_to_end(
    etcd: str, s3: dict[str, str], floors: dict[str, float], repeat: int, size: int
) -> None:
    shapes = [
        (f"chain {size}", chain(size), size),
        (f"fan-in {size}", fan(size), size + 2),
    ]
    print(
        f"\n3. end to end, {WORKERS} workers, best of {repeat} "
        "(store floor = the counted requests at the floor round trips)"
    )
    print(
        f"{'shape':<12}{'stores':<14}{'ms/node':>9}{'requests/node':>15}"
        f"{'floor ms/node':>15}{'x floor':>9}  requests per node by kind"
    )
    for name, define, nodes in shapes:
        best_memory = min(
            run_flow(define, "memory", etcd, s3, collections.Counter()) for _ in range(repeat)
        )
        print(f"{name:<12}{'memory':<14}{best_memory / nodes * 1e3:>9.3f}")
        results = []
        for _ in range(repeat):
            counts: collections.Counter[str] = collections.Counter()
            results.append((run_flow(define, "etcd+s3", etcd, s3, counts), counts))
        elapsed, counts = min(results, key=lambda r: r[0])
        requests = sum(counts.values())
        floor = sum(floors[kind] * count for kind, count in counts.items())
        detail = ", ".join(f"{k} {v / nodes:.2f}" for k, v in sorted(counts.items()))
        print(
            f"{'':<12}{'etcd+ceph-s3':<14}{elapsed / nodes * 1e3:>9.3f}{requests / nodes:>15.2f}"
            f"{floor / nodes * 1e3:>15.3f}{elapsed / floor:>9.2f}  {detail}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, one run per shape")
    args = parser.parse_args(argv)
    missing = [
        v for v in ("ETCD_ENDPOINTS", "S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY")
        if not os.environ.get(v)
    ]
    if missing:
        print(
            f"{', '.join(missing)} not set: run `.ci/services up` and "
            "`set -a; . /dev/shm/faasflow-ci-services/env; set +a`",
            file=sys.stderr,
        )
        return 2
    etcd = os.environ["ETCD_ENDPOINTS"]
    s3 = {
        "endpoint": os.environ["S3_ENDPOINT"],
        "access_key": os.environ["S3_ACCESS_KEY"],
        "secret_key": os.environ["S3_SECRET_KEY"],
        "region": os.environ.get("S3_REGION", "us-east-1"),
        "bucket": "faasflow-bench",
    }
    n = 100 if args.quick else 500
    repeat = 1 if args.quick else 3

    floors = {**etcd_floors(etcd, n), **s3_floors(s3, n)}
    print("1. floors: raw client round trip, median")
    for kind, seconds in floors.items():
        print(f"   {kind:<24}{seconds * 1e3:>8.3f} ms")

    print("\n2. store operations, median (x floor = / the round trips the operation needs)")
    print(f"   {'operation':<26}{'ms':>8}{'x floor':>9}")
    for label, rows in (
        ("etcd", etcd_operations(etcd, floors, n)),
        ("s3", s3_operations(s3, floors, n)),
    ):
        for op, seconds, floor in rows:
            print(f"   {label + ' ' + op:<26}{seconds * 1e3:>8.3f}{seconds / floor:>9.2f}")

    end_to_end(etcd, s3, floors, repeat, 100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
