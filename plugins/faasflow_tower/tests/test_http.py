"""The dashboard over plain HTTP, through real sockets: escaping, CSRF, read-only mode, basic
auth, bad parameters, conditional polling, and the OpenFaaS entry point."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from faasflow_tower import TowerApp, TowerConfig
from faasflow_tower.openfaas import create_app

from faasflow.runtime.process import GatewayProcess
from faasflow.runtime.server import Server, serve

Start = Callable[[str, bytes], str]
Wait = Callable[[str, str, Callable[[dict[str, Any]], bool]], dict[str, Any]]
STACK = Path(__file__).parent / "stack" / "stack.yml"


def _csrf(session: requests.Session, url: str) -> str:
    session.get(url, timeout=10).raise_for_status()
    token = session.cookies.get("tower_csrf")
    assert token
    return token


@pytest.fixture
def served() -> Iterator[Callable[[Any], str]]:
    servers: list[Server] = []

    def run(app: Any) -> str:
        server = serve(app, "127.0.0.1", 0)
        server.start()
        servers.append(server)
        return server.url

    yield run
    for server in servers:
        server.close()


def test_user_data_is_escaped_on_every_page(ui: str, start: Start, wait_record: Wait) -> None:
    flows = requests.get(ui + "/", timeout=10).text
    assert "fails at its check node &lt;b&gt;unless&lt;/b&gt; told ok" in flows
    assert "<b>unless</b>" not in flows
    listing = requests.get(ui + "/flows/broken/requests", params={"q": '"><script>x()</script>'},
                           timeout=10).text
    assert "<script>x()" not in listing
    assert "&quot;&gt;&lt;script&gt;x()&lt;/script&gt;" in listing


def test_a_post_without_the_csrf_token_is_refused(ui: str, start: Start,
                                                  wait_record: Wait) -> None:
    rid = start("slow", b"1")
    session = requests.Session()
    token = _csrf(session, ui + "/")
    for data in ({}, {"csrf": "forged"}):
        answer = session.post(f"{ui}/flows/slow/requests/{rid}/pause", data=data, timeout=10,
                              allow_redirects=False)
        assert answer.status_code == 403
        assert "CSRF token" in answer.text
    # a token without its cookie (another site's form) is refused too
    answer = requests.post(f"{ui}/flows/slow/requests/{rid}/pause", data={"csrf": token},
                           timeout=10, allow_redirects=False)
    assert answer.status_code == 403
    assert wait_record("slow", rid, lambda d: d["status"] != "running")["status"] == "success"


def test_a_post_with_the_csrf_token_acts_and_redirects_to_the_request(
        ui: str, start: Start, wait_record: Wait) -> None:
    rid = start("slow", b"3")
    session = requests.Session()
    token = _csrf(session, ui + "/")
    answer = session.post(f"{ui}/flows/slow/requests/{rid}/stop", data={"csrf": token},
                          timeout=10, allow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"/ui/flows/slow/requests/{rid}?done=stop"
    assert wait_record("slow", rid, lambda d: d["status"] != "running")["status"] == "stopped"


def test_read_only_mode_hides_and_refuses_control_actions(gateway: GatewayProcess, start: Start,
                                                          served: Callable[[Any], str]) -> None:
    url = served(TowerApp(TowerConfig(gateway.url, read_only=True)))
    rid = start("slow", b"2")
    session = requests.Session()
    page = session.get(f"{url}/flows/slow/requests/{rid}", timeout=10)
    assert page.status_code == 200
    assert "read-only" in page.text
    assert "<button" not in page.text.split('id="controls"')[1].split("</div>")[0]
    assert 'id="execute"' not in session.get(f"{url}/flows/slow", timeout=10).text
    answer = session.post(f"{url}/flows/slow/requests/{rid}/stop",
                          data={"csrf": session.cookies.get("tower_csrf")}, timeout=10)
    assert answer.status_code == 403
    assert "FAASFLOW_TOWER_READ_ONLY" in answer.text


def test_bad_parameters_answer_400_naming_the_parameter(ui: str) -> None:
    for params, named in (({"since": "yesterday-ish"}, "since:"), ({"limit": "0"}, "limit:"),
                          ({"status": "lost"}, "status:")):
        answer = requests.get(ui + "/flows/report/requests", params=params, timeout=10)
        assert answer.status_code == 400, params
        assert named in answer.text


def test_an_unknown_flow_or_request_answers_404_naming_it(ui: str) -> None:
    answer = requests.get(ui + "/flows/nosuch", timeout=10)
    assert answer.status_code == 404
    assert "no flow &#x27;nosuch&#x27;" in answer.text
    answer = requests.get(ui + "/flows/report/requests/dc7nothere00000000000000", timeout=10)
    assert answer.status_code == 404
    assert "dc7nothere00000000000000" in answer.text


def test_the_live_fragment_polls_while_running_and_answers_304_when_unchanged(
        ui: str, start: Start, wait_record: Wait) -> None:
    rid = start("report", b"a b")
    wait_record("report", rid, lambda d: d["status"] == "success")
    session = requests.Session()
    fragment = session.get(f"{ui}/flows/report/requests/{rid}/live", timeout=10)
    assert fragment.status_code == 200
    assert "hx-trigger" not in fragment.text  # ended: no more polling
    again = session.get(f"{ui}/flows/report/requests/{rid}/live", timeout=10,
                         headers={"If-None-Match": fragment.headers["ETag"]})
    assert again.status_code == 304
    running = start("slow", b"2")
    live = requests.get(f"{ui}/flows/slow/requests/{running}/live", timeout=10).text
    assert 'hx-trigger="every 1s"' in live


def test_the_openfaas_entry_point_links_under_the_function_route(
        gateway: GatewayProcess, served: Callable[[Any], str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("gateway_url", gateway.url)
    url = served(create_app())
    page = requests.get(url + "/", timeout=10)
    assert page.status_code == 200
    assert 'href="/function/faasflow-tower/flows/report"' in page.text


def test_dashboard_credentials_are_asked_of_its_users(gateway: GatewayProcess,
                                                      served: Callable[[Any], str]) -> None:
    url = served(TowerApp(TowerConfig(gateway.url, credentials=("admin", "s3cret"))))
    answer = requests.get(url + "/", timeout=10)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(url + "/", auth=("admin", "wrong"), timeout=10).status_code == 401
    assert requests.get(url + "/", auth=("admin", "s3cret"), timeout=10).status_code == 200


def test_the_users_credentials_are_forwarded_to_a_gateway_with_basic_auth(
        tmp_path: Path) -> None:
    with GatewayProcess(STACK, data_dir=tmp_path / "data", processes=1,
                        extra=["--basic-auth"]) as gateway:
        secrets = tmp_path / "data" / "secrets"
        user = (secrets / "basic-auth-user").read_text().strip()
        password = (secrets / "basic-auth-password").read_text().strip()
        answer = requests.get(gateway.url + "/ui/", timeout=10)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")
        # nor can control actions go around the gateway's auth
        assert requests.post(gateway.url + "/ui/flows/slow/requests/x/stop",
                             timeout=10).status_code == 401
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        answer = requests.get(gateway.url + "/ui/", headers={"Authorization": f"Basic {token}"},
                              timeout=10)
        assert answer.status_code == 200
        assert re.search(r'href="/ui/flows/report"', answer.text)
        # the request page reads /system/logs with the same credentials
        started = requests.post(gateway.url + "/function/broken", data=b"x", timeout=10,
                                headers={"Authorization": f"Basic {token}"})
        rid = started.headers["X-Faas-Flow-Reqid"]
        text = ""
        for _ in range(50):
            text = requests.get(f"{gateway.url}/ui/flows/broken/requests/{rid}", timeout=10,
                                headers={"Authorization": f"Basic {token}"}).text
            if "reject: checking &lt;x&gt;" in text:
                break
            time.sleep(0.2)
        assert "reject: checking &lt;x&gt;" in text, text


def test_the_request_page_has_a_json_twin_with_every_node_state(ui: str, start: Start,
                                                                 wait_record: Wait) -> None:
    rid = start("broken", b"nope")
    wait_record("broken", rid, lambda d: d["status"] == "failure")
    doc = requests.get(f"{ui}/flows/broken/requests/{rid}",
                       headers={"Accept": "application/json"}, timeout=10).json()
    assert doc["request"]["id"] == rid
    assert {k: v["state"] for k, v in doc["nodes"].items()} == {
        "0_1_load": "succeeded", "0_2_check": "failed", "0_3_store": "not-reached"}


def test_without_graphviz_the_dag_is_drawn_by_the_built_in_layout(
        gateway: GatewayProcess, served: Callable[[Any], str]) -> None:
    url = served(TowerApp(TowerConfig(gateway.url, use_dot=False)))
    page = requests.get(f"{url}/flows/report", timeout=10).text
    assert 'class="graph"' not in page  # Graphviz wraps its drawing in g.graph
    assert page.count('class="node ffnode"') == 4
    assert "<title>0_4_summary</title>" in page


def test_stop_all_matching_stops_every_running_request_of_the_filter(
        ui: str, start: Start, wait_record: Wait) -> None:
    ids = [start("slow", b"8") for _ in range(3)]
    done = start("slow", b"0")
    wait_record("slow", done, lambda d: d["status"] == "success")
    session = requests.Session()
    token = _csrf(session, ui + "/flows/slow/requests?status=running")
    answer = session.post(f"{ui}/flows/slow/requests/stop", timeout=30, allow_redirects=False,
                          data={"csrf": token, "all": "1", "status": ["running", "success"]})
    assert answer.status_code == 303
    stopped = int(re.search(r"stopped=(\d+)", answer.headers["Location"])[1])
    assert stopped >= 3
    for rid in ids:
        assert wait_record("slow", rid, lambda d: d["status"] != "running")["status"] == "stopped"
    assert wait_record("slow", done, lambda d: True)["status"] == "success"


def test_the_logs_page_of_an_unknown_node_answers_400_naming_the_nodes(
        ui: str, start: Start, wait_record: Wait) -> None:
    rid = start("broken", b"ok")
    wait_record("broken", rid, lambda d: d["status"] == "success")
    answer = requests.get(f"{ui}/flows/broken/requests/{rid}/logs", params={"node": "<nope>"},
                          timeout=10)
    assert answer.status_code == 400
    assert "&lt;nope&gt;" in answer.text
    assert "<nope>" not in answer.text
    assert "check, load, store" in answer.text
    every = requests.get(f"{ui}/flows/broken/requests/{rid}/logs", timeout=10)
    assert every.status_code == 200
    assert "reject: checking &lt;ok&gt;" in every.text
