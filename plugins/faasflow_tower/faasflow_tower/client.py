"""What the dashboard asks the gateway: its functions, each flow's export, records and control.

Everything goes over HTTP to the gateway, under ``faasflow up`` and on OpenFaaS alike, so the
dashboard needs no access to the stores. ``/system/*`` calls carry the user's ``Authorization``
(or the dashboard's own credentials on OpenFaaS); when the flows sign their control routes
(``FAASFLOW_AUTHENTICATE_REQUEST``) and the dashboard knows the HMAC secret, it signs them too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import attrs
import requests

__all__ = ["Answer", "GatewayClient", "GatewayError", "Unauthorized"]

#: Query parameters the request list passes to ``GET /flow`` (the request-history index).
LIST_PARAMS = ("status", "since", "until", "node", "q", "limit", "cursor")
_TIMEOUT = 30.0


class GatewayError(Exception):
    """The gateway or a flow answered something the page cannot show."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class Unauthorized(GatewayError):
    """The gateway refused the credentials (or their absence)."""

    def __init__(self) -> None:
        super().__init__("the gateway asks for its basic-auth credentials", 401)


@attrs.frozen
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


@attrs.define
class GatewayClient:
    url: str
    hmac_secret: bytes | None = None
    timeout: float = _TIMEOUT
    _local: threading.local = attrs.field(factory=threading.local, init=False)

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False  # loopback and cluster addresses never go via a proxy
        return session

    def call(self, method: str, path: str, *, body: bytes = b"",
             headers: Mapping[str, str] | None = None, timeout: float | None = None) -> Answer:
        try:
            reply = self._session().request(method, self.url.rstrip("/") + path, data=body,
                                            headers=dict(headers or {}),
                                            timeout=timeout or self.timeout,
                                            allow_redirects=False)
        except requests.RequestException as exc:
            raise GatewayError(f"cannot reach the gateway at {self.url}: {exc}") from None
        return Answer(reply.status_code, dict(reply.headers), reply.content)

    def _json(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        answer = self.call(method, path, **kwargs)
        if answer.status == 401:
            raise Unauthorized
        if answer.status == 404:
            raise GatewayError(f"{what}: not found", 404)
        if answer.status >= 400:
            text = answer.body[:300].decode("utf-8", "replace").strip()
            raise GatewayError(f"{what}: the gateway answered {answer.status}: {text}")
        try:
            return json.loads(answer.body)
        except ValueError:
            raise GatewayError(f"{what}: the answer is not JSON") from None

    # -- the gateway ---------------------------------------------------------------------------

    def functions(self, authorization: str | None) -> list[dict[str, Any]]:
        """``GET /system/functions`` with the user's credentials."""
        headers = {"Authorization": authorization} if authorization else {}
        doc = self._json("GET", "/system/functions", "the function list", headers=headers)
        if not isinstance(doc, list):
            raise GatewayError("the function list is not a JSON list")
        return [f for f in doc if isinstance(f, dict) and isinstance(f.get("name"), str)]

    def logs(self, function: str, authorization: str | None) -> list[dict[str, Any]]:
        """The lines the gateway keeps of one function (``GET /system/logs``, NDJSON), with the
        user's credentials. A gateway without the route, or a function it has no lines of,
        gives no lines rather than an error: logs are a part of the page, not the page."""
        headers = {"Authorization": authorization} if authorization else {}
        answer = self.call("GET", "/system/logs?" + urlencode([("name", function)]),
                           headers=headers)
        if answer.status == 401:
            raise Unauthorized
        if answer.status >= 400:
            return []
        lines = []
        for raw in answer.body.splitlines():
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            if isinstance(doc, dict):
                lines.append(doc)
        return lines

    # -- one flow ------------------------------------------------------------------------------

    @staticmethod
    def _flow(flow: str, rest: str = "") -> str:
        return f"/function/{quote(flow, safe='')}{rest}"

    def _signed(self, path: str, query: str, body: bytes) -> dict[str, str]:
        if self.hmac_secret is None:
            return {}
        from faasflow.engine.message import sign_body
        from faasflow.runtime.guard import SIGNATURE, signed_target

        # the flow sees the path below its function route
        inner = path.split("/", 3)[3] if path.count("/") >= 3 else ""
        return {SIGNATURE: sign_body(self.hmac_secret, signed_target("/" + inner, query, body))}

    def export(self, flow: str) -> dict[str, Any]:
        doc = self._json("GET", self._flow(flow, "?export-dag=true"), f"the export of {flow}")
        if not isinstance(doc, dict):
            raise GatewayError(f"the export of {flow} is not a JSON object")
        return doc

    def requests(self, flow: str, params: Sequence[tuple[str, str]] = ()
                 ) -> tuple[list[dict[str, Any]], str | None, bool]:
        """One page of the flow's requests: (requests, next cursor, paged by the flow).

        A flow with the request index answers ``{"requests": [...], "next": ...}`` and pages and
        filters itself (the third value is True); an older one lists every record and ignores
        the parameters.
        """
        query = urlencode([(k, v) for k, v in params if k in LIST_PARAMS and v])
        path = self._flow(flow, "/flow")
        doc = self._json("GET", path + (f"?{query}" if query else ""),
                         f"the requests of {flow}", headers=self._signed(path, query, b""))
        if isinstance(doc, list):
            return [d for d in doc if isinstance(d, dict)], None, False
        if not isinstance(doc, dict):
            raise GatewayError(f"the requests of {flow}: not a JSON object")
        items = [d for d in doc.get("requests") or () if isinstance(d, dict)]
        if "next" in doc:
            nxt = doc.get("next")
            return items, str(nxt) if nxt else None, True
        return items, None, False

    def record(self, flow: str, request_id: str) -> dict[str, Any] | None:
        path = self._flow(flow, f"/flow/{quote(request_id, safe='')}")
        # with the captured inputs and outputs (FAASFLOW_CAPTURE); older flows ignore it
        answer = self.call("GET", path + "?payloads=true",
                           headers=self._signed(path, "payloads=true", b""))
        if answer.status in (404, 410):
            return None
        if answer.status == 400:
            raise GatewayError(answer.body[:300].decode("utf-8", "replace").strip(), 400)
        if answer.status >= 400:
            raise GatewayError(f"the record of {request_id}: the flow answered {answer.status}")
        try:
            doc = json.loads(answer.body)
        except ValueError:
            raise GatewayError(f"the record of {request_id} is not JSON") from None
        return doc if isinstance(doc, dict) else None

    def control(self, flow: str, request_id: str, action: str) -> Answer:
        """``POST /flow/<id>/<action>`` (pause, resume, stop)."""
        path = self._flow(flow, f"/flow/{quote(request_id, safe='')}/{action}")
        return self.call("POST", path, headers=self._signed(path, "", b""))

    def has_route(self, flow: str, request_id: str, action: str) -> bool:
        """Whether the flow serves ``/flow/<id>/<action>`` (redrive, rerun). The probe is an
        OPTIONS, signed like a control call: a flow answers an unknown action with 404 and a
        known one with 405 (or its own answer); a refusal or an error means "not offered"."""
        path = self._flow(flow, f"/flow/{quote(request_id, safe='')}/{action}")
        answer = self.call("OPTIONS", path, headers=self._signed(path, "", b""))
        return answer.status < 500 and answer.status not in (401, 403, 404)

    def execute(self, flow: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        return self.call("POST", self._flow(flow), body=body, headers=headers)
