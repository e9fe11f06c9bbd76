"""A STAND-IN for a Consul agent's KV HTTP API, for tests only. It is not Consul.

No Consul server can be installed on the build machine, so the Consul plugin's tests run against
this separate process, which answers the KV endpoints with Consul's documented semantics:

- ``GET /v1/kv/<key>``: a JSON list of ``{CreateIndex, ModifyIndex, LockIndex, Key, Flags,
  Value (base64, null when empty), Session?}``; ``?recurse`` (every key with the prefix, sorted),
  ``?keys`` with optional ``&separator=``, ``?raw``; 404 when nothing matches;
  ``X-Consul-Index`` on every answer; blocking queries with ``?index=&wait=`` (answer once the
  index passes the given one, or after ``wait``; Consul's default wait is 5 minutes).
- ``PUT /v1/kv/<key>``: the body is the value (up to 512 KiB, else 413); ``?cas=0`` writes only
  an absent key, ``?cas=<n>`` only a key whose ModifyIndex is ``n``; ``?flags=``; answers
  ``true`` or ``false``.
- ``DELETE /v1/kv/<key>``: ``?recurse`` deletes the prefix, ``?cas=<n>`` (non-zero) deletes only
  at that ModifyIndex; answers ``true`` or ``false``.
- ``PUT /v1/txn``: a JSON list of up to 64 ``{"KV": {"Verb", "Key", "Value", "Flags",
  "Index"}}`` operations applied atomically under one Raft index; verbs ``set``, ``cas``,
  ``get``, ``check-index``, ``check-not-exists``, ``delete``, ``delete-cas`` and
  ``delete-tree``. 200 with ``{"Results": [...], "Errors": null}`` when every operation
  succeeds; otherwise nothing is applied and the answer is 409 with ``{"Results": null,
  "Errors": [{"OpIndex", "What"}]}``. More than 64 operations answer 413; other verbs 501.
- Every write takes the next Raft index, as in Consul, so indexes only grow; deletes leave
  tombstones whose index a later read of the key reports.
- ``?consistent``, ``?stale`` and ``?dc=`` are accepted (``dc`` must name this datacenter,
  ``dc1``); with ``--token`` every request must carry it (``X-Consul-Token`` or ``?token=``),
  else 403 "Permission denied".
- ``GET /v1/status/leader`` answers, for readiness checks.

Anything else (sessions, ``acquire``/``release``, session verbs in a txn, other endpoints)
answers 501 so a test never silently relies on behaviour the stand-in does not have.
``--state FILE`` keeps the data across restarts, like an agent's data directory.

Run: ``python consul_standin.py [--port N] [--token T] [--state FILE]``; it prints
``listening 127.0.0.1:<port>`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_VALUE_BYTES = 512 * 1024
MAX_TXN_OPS = 64
_TXN_VERBS = {
    "set", "cas", "get", "check-index", "check-not-exists", "delete", "delete-cas", "delete-tree"
}
DATACENTER = "dc1"
DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0


class KV:
    """The key/value state: entries, tombstones and the Raft index."""

    def __init__(self, state_file: Path | None = None) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.tombstones: dict[str, int] = {}
        self.index = 1
        self.changed = threading.Condition()
        self.state_file = state_file
        if state_file is not None and state_file.exists():
            saved = json.loads(state_file.read_text())
            self.entries, self.tombstones, self.index = (
                saved["entries"], saved["tombstones"], saved["index"]
            )

    def _commit(self) -> int:
        """Take the next Raft index for a write (call with ``changed`` held)."""
        self.index += 1
        return self.index

    def _saved(self) -> None:
        if self.state_file is not None:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {"entries": self.entries, "tombstones": self.tombstones, "index": self.index}
                )
            )
            tmp.replace(self.state_file)
        self.changed.notify_all()

    def query_index(self, prefix: str, exact: bool) -> int:
        """The X-Consul-Index of a read: the highest index that touched the keys read, or the
        table's index when none did."""
        if exact:
            found = [self.entries[prefix]["ModifyIndex"]] if prefix in self.entries else []
            if prefix in self.tombstones:
                found.append(self.tombstones[prefix])
        else:
            found = [e["ModifyIndex"] for k, e in self.entries.items() if k.startswith(prefix)]
            found += [i for k, i in self.tombstones.items() if k.startswith(prefix)]
        return max(found) if found else self.index

    def read(self, key: str, recurse: bool) -> list[dict[str, Any]]:
        if recurse:
            return [self.entries[k] for k in sorted(self.entries) if k.startswith(key)]
        return [self.entries[key]] if key in self.entries else []

    def put(self, key: str, value: bytes, cas: int | None, flags: int) -> bool:
        with self.changed:
            current = self.entries.get(key)
            if cas is not None:
                if cas == 0 and current is not None:
                    return False
                if cas != 0 and (current is None or current["ModifyIndex"] != cas):
                    return False
            index = self._commit()
            self.entries[key] = {
                "LockIndex": 0,
                "Key": key,
                "Flags": flags,
                "Value": base64.b64encode(value).decode() if value else None,
                "CreateIndex": current["CreateIndex"] if current else index,
                "ModifyIndex": index,
            }
            self.tombstones.pop(key, None)
            self._saved()
            return True

    def delete(self, key: str, recurse: bool, cas: int | None) -> bool:
        with self.changed:
            if cas is not None and not recurse:
                current = self.entries.get(key)
                if cas == 0 or current is None or current["ModifyIndex"] != cas:
                    return False
            index = self._commit()
            doomed = [k for k in self.entries if k.startswith(key)] if recurse else (
                [key] if key in self.entries else []
            )
            for name in doomed:
                del self.entries[name]
                self.tombstones[name] = index
            self._saved()
            return True

    def txn(self, ops: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Check every operation against the current entries, then apply all or none under one
        index; return ``(results, errors)``."""
        with self.changed:
            staged = dict(self.entries)
            index = self.index + 1
            results: list[dict[str, Any]] = []
            errors: list[dict[str, Any]] = []
            touched: set[str] = set()
            for at, op in enumerate(ops):
                verb, key = op["Verb"], op["Key"]
                current = staged.get(key)
                wanted = int(op.get("Index", 0))
                failure = None
                if verb == "cas" and (
                    (current is not None) if wanted == 0
                    else (current is None or current["ModifyIndex"] != wanted)
                ):
                    failure = f"failed to set key {key!r}, index is stale"
                elif verb in {"check-index", "delete-cas"} and current is None:
                    failure = f"key {key!r} doesn't exist"
                elif verb in {"check-index", "delete-cas"} and current["ModifyIndex"] != wanted:
                    failure = f"current modify index {current['ModifyIndex']} != {wanted}"
                elif verb == "check-not-exists" and current is not None:
                    failure = f"key {key!r} exists"
                elif verb == "get" and current is None:
                    failure = f"key {key!r} doesn't exist"
                if failure is not None:
                    errors.append({"OpIndex": at, "What": failure})
                    continue
                if verb in {"set", "cas"}:
                    raw = base64.b64decode(op.get("Value") or "")
                    staged[key] = {
                        "LockIndex": 0,
                        "Key": key,
                        "Flags": int(op.get("Flags", 0)),
                        "Value": base64.b64encode(raw).decode() if raw else None,
                        "CreateIndex": current["CreateIndex"] if current else index,
                        "ModifyIndex": index,
                    }
                    touched.add(key)
                    results.append({"KV": dict(staged[key], Value=None)})
                elif verb in {"delete", "delete-cas"}:
                    staged.pop(key, None)
                    touched.add(key)
                elif verb == "delete-tree":
                    for name in [k for k in staged if k.startswith(key)]:
                        del staged[name]
                        touched.add(name)
                elif verb == "get":
                    results.append({"KV": dict(current)})  # type: ignore[arg-type]
            if errors:
                return [], errors
            if touched:
                self.index = index
                for name in touched:
                    if name in staged:
                        self.tombstones.pop(name, None)
                    elif name in self.entries:
                        self.tombstones[name] = index
                self.entries = staged
                self._saved()
            return results, []

    def wait_past(self, prefix: str, exact: bool, index: int, timeout: float) -> None:
        """Block until the query index of ``prefix`` passes ``index`` or ``timeout`` ends."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.query_index(prefix, exact) <= index:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.changed.wait(remaining)


def _duration(text: str) -> float:
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(text)
    return sum(float(n) * units[u] for n, u in parts)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def make_handler(kv: KV, token: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # keep-alive clients stall ~40 ms per call otherwise

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._dispatch()

        do_PUT = do_DELETE = do_POST = do_GET

        def _dispatch(self) -> None:
            parts = urlsplit(self.path)
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                if token is not None and token not in (
                    self.headers.get("X-Consul-Token"), params.get("token")
                ):
                    raise _BadRequest(403, "Permission denied")
                if parts.path == "/v1/status/leader" and self.command == "GET":
                    self._send(200, b'"127.0.0.1:8300"', index=kv.index)
                    return
                if parts.path == "/v1/txn":
                    self._txn(params, body)
                    return
                if not parts.path.startswith("/v1/kv/"):
                    raise _BadRequest(501, f"{parts.path} is not implemented by the stand-in")
                key = unquote(parts.path[len("/v1/kv/"):])
                if params.pop("dc", DATACENTER) != DATACENTER:
                    raise _BadRequest(500, "No path to datacenter")
                params.pop("token", None)
                params.pop("consistent", None)
                params.pop("stale", None)
                if self.command == "GET":
                    self._get(key, params)
                elif self.command == "PUT":
                    self._put(key, params, body)
                elif self.command == "DELETE":
                    self._delete(key, params)
                else:
                    raise _BadRequest(405, f"method {self.command} not allowed")
            except _BadRequest as exc:
                self._send(exc.status, str(exc).encode(), content_type="text/plain")

        def _take(self, params: dict[str, str], allowed: set[str]) -> None:
            unsupported = set(params) - allowed
            if unsupported:
                raise _BadRequest(
                    501, f"parameter(s) {sorted(unsupported)} not implemented by the stand-in"
                )

        def _get(self, key: str, params: dict[str, str]) -> None:
            self._take(params, {"recurse", "keys", "separator", "raw", "index", "wait"})
            recurse = "recurse" in params or "keys" in params
            if "index" in params:
                try:
                    index = int(params["index"])
                    wait = _duration(params["wait"]) if "wait" in params else DEFAULT_WAIT
                except ValueError:
                    raise _BadRequest(400, "Invalid index or wait") from None
                kv.wait_past(key, not recurse, index, min(wait, MAX_WAIT))
            with kv.changed:
                entries = [dict(e) for e in kv.read(key, recurse)]
                index = kv.query_index(key, not recurse)
            if not entries:
                self._send(404, b"", index=index)
                return
            if "keys" in params:
                separator = params.get("separator", "")
                names: list[str] = []
                for entry in entries:
                    name = entry["Key"]
                    if separator:
                        cut = name.find(separator, len(key))
                        if cut >= 0:
                            name = name[: cut + len(separator)]
                    if not names or names[-1] != name:
                        names.append(name)
                self._send(200, json.dumps(names).encode(), index=index)
            elif "raw" in params:
                value = entries[0]["Value"]
                raw = base64.b64decode(value) if value else b""
                self._send(200, raw, index=index, content_type="application/octet-stream")
            else:
                self._send(200, json.dumps(entries).encode(), index=index)

        def _put(self, key: str, params: dict[str, str], body: bytes) -> None:
            self._take(params, {"cas", "flags"})
            if len(body) > MAX_VALUE_BYTES:
                raise _BadRequest(
                    413,
                    f"Request body({len(body)} bytes) too large, max size: "
                    f"{MAX_VALUE_BYTES} bytes",
                )
            if not key:
                raise _BadRequest(400, "Missing key name")
            try:
                cas = int(params["cas"]) if "cas" in params else None
                flags = int(params.get("flags", "0"))
            except ValueError:
                raise _BadRequest(400, "Invalid cas or flags") from None
            self._send(200, b"true" if kv.put(key, body, cas, flags) else b"false")

        def _txn(self, params: dict[str, str], body: bytes) -> None:
            if self.command != "PUT":
                raise _BadRequest(405, f"method {self.command} not allowed")
            if params.pop("dc", DATACENTER) != DATACENTER:
                raise _BadRequest(500, "No path to datacenter")
            params.pop("token", None)
            self._take(params, set())
            try:
                ops = json.loads(body or b"null")
            except ValueError:
                raise _BadRequest(400, "Failed to parse body") from None
            if not isinstance(ops, list):
                raise _BadRequest(400, "Failed to parse body: not a list of operations")
            if len(ops) > MAX_TXN_OPS:
                raise _BadRequest(
                    413,
                    f"Transaction contains too many operations ({len(ops)} > {MAX_TXN_OPS})",
                )
            kv_ops: list[dict[str, Any]] = []
            for op in ops:
                entry = op.get("KV") if isinstance(op, dict) else None
                if not isinstance(entry, dict) or set(op) != {"KV"}:
                    raise _BadRequest(501, "only KV operations are implemented by the stand-in")
                if entry.get("Verb") not in _TXN_VERBS:
                    raise _BadRequest(
                        501, f"verb {entry.get('Verb')!r} not implemented by the stand-in"
                    )
                if not entry.get("Key") and entry["Verb"] != "delete-tree":
                    raise _BadRequest(400, "Missing key name")
                value = entry.get("Value") or ""
                if len(value) * 3 // 4 > MAX_VALUE_BYTES:
                    raise _BadRequest(413, "Value exceeds 512 KiB")
                kv_ops.append(entry)
            results, errors = kv.txn(kv_ops)
            if errors:
                answer = {"Results": None, "Errors": errors}
                self._send(409, json.dumps(answer).encode(), index=kv.index)
            else:
                answer = {"Results": results, "Errors": None}
                self._send(200, json.dumps(answer).encode(), index=kv.index)

        def _delete(self, key: str, params: dict[str, str]) -> None:
            self._take(params, {"recurse", "cas"})
            try:
                cas = int(params["cas"]) if "cas" in params else None
            except ValueError:
                raise _BadRequest(400, "Invalid cas") from None
            self._send(200, b"true" if kv.delete(key, "recurse" in params, cas) else b"false")

        def _send(
            self,
            status: int,
            body: bytes,
            *,
            index: int | None = None,
            content_type: str = "application/json",
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if index is not None:
                self.send_header("X-Consul-Index", str(max(index, 1)))
                self.send_header("X-Consul-KnownLeader", "true")
                self.send_header("X-Consul-LastContact", "0")
            self.end_headers()
            self.wfile.write(body)

    return Handler


def serve(port: int, token: str | None, state_file: Path | None) -> None:
    kv = KV(state_file)
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(kv, token))
    server.daemon_threads = True
    host, bound = server.server_address[:2]
    print(f"listening {host!s}:{bound}", flush=True)
    server.serve_forever()


class ConsulStandIn:
    """The stand-in run as its own process, so tests can stop and restart it like an agent.

    The first start takes a free port, which later starts keep; the process writes to
    ``consul-standin.log`` in ``workdir``.
    """

    def __init__(
        self, workdir: Path, *, token: str | None = None, keep_state: bool = True
    ) -> None:
        # Imported here, not at the top: this file is also the stand-in process, which should
        # not pay for importing faasflow's test toolkit at every (re)start.
        from faasflow.testing import ServerProcess

        self.workdir = workdir
        self.token = token
        self.state_file = workdir / "consul-standin-state.json" if keep_state else None
        self.port = 0
        self.server = ServerProcess(
            "the Consul stand-in",
            command=self._command,
            ready=self._listening,
            log=workdir / "consul-standin.log",
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def _command(self) -> list[str]:
        args = [sys.executable, __file__, "--port", str(self.port)]
        if self.token is not None:
            args += ["--token", self.token]
        if self.state_file is not None:
            args += ["--state", str(self.state_file)]
        return args

    def _listening(self) -> bool:
        said = re.search(r"^listening [\d.]+:(\d+)$", self.server.output_since_start(), re.M)
        if said is None:
            return False
        self.port = int(said.group(1))
        return True

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.server.restart()

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, read over HTTP like any client."""
        request = urllib.request.Request(f"{self.url}/v1/kv/{prefix}?keys")
        if self.token is not None:
            request.add_header("X-Consul-Token", self.token)
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
                names: list[str] = json.loads(answer.read())
                return names
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise


def running(workdir: Path, **kwargs: Any) -> Iterator[ConsulStandIn]:
    """Start a stand-in for the duration of a fixture."""
    standin = ConsulStandIn(workdir, **kwargs)
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Consul KV stand-in for faasflow's tests")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=os.environ.get("CONSUL_STANDIN_TOKEN"))
    parser.add_argument("--state", type=Path)
    args = parser.parse_args()
    serve(args.port, args.token, args.state)


if __name__ == "__main__":
    main()
