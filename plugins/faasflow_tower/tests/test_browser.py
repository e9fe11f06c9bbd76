"""The dashboard in headless Chromium against a real ``faasflow up`` (see conftest.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect

Start = Callable[[str, bytes], str]
Shot = Callable[[str], None]
Wait = Callable[[str, str, Callable[[dict[str, Any]], bool]], dict[str, Any]]


def test_flows_page_lists_every_flow_with_its_description(page: Any, ui: str, start: Start,
                                                          wait_record: Wait,
                                                          shot: Shot) -> None:
    rid = start("report", b"one two three")
    wait_record("report", rid, lambda d: d["status"] == "success")
    page.goto(ui + "/")
    rows = page.locator("#flows tr.flow-row")
    expect(rows).to_have_count(4)
    for flow in ("report", "squares", "slow", "broken"):
        expect(page.locator("#flows").get_by_role("link", name=flow, exact=True)).to_be_visible()
    # a description is text, not markup
    expect(page.locator("#flows")).to_contain_text("fails at its check node <b>unless</b> told ok")
    expect(page.locator("#functions")).to_contain_text("nap")
    expect(page.locator("#flows tr", has_text="report")).to_contain_text("success")


def test_flow_page_draws_the_dag_with_its_nodes(page: Any, ui: str, shot: Shot) -> None:
    page.goto(ui + "/")
    page.locator("#flows").get_by_role("link", name="report", exact=True).click()
    expect(page).to_have_url(re.compile(r"/ui/flows/report$"))
    titles = page.locator("#dag svg g.node > title")
    expect(titles).to_have_count(4)
    assert sorted(titles.all_text_contents()) == [
        "0_1_clean", "0_2_words", "0_3_letters", "0_4_summary"]
    for node in ("clean", "words", "letters", "summary"):
        expect(page.locator("#dag svg g.node text", has_text=node).first).to_be_visible()
    expect(page.locator("#definition-hash")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    shot("flow")


def test_execute_form_starts_a_request_and_links_to_it(page: Any, ui: str, shot: Shot) -> None:
    page.goto(ui + "/flows/squares")
    page.get_by_label("body").fill("1,2,3")
    page.get_by_role("button", name="Execute").click()
    link = page.locator("#execute-link")
    expect(link).to_be_visible()
    link.click()
    expect(page.locator("#request-status")).to_have_text("success", timeout=15000)
    expect(page.locator("#output")).to_have_text("1 + 4 + 9 = 14")
    # three foreach branches of `square`, counted on its row, and one bar per run
    expect(page.locator('tr.node-row[data-node="2_1_square"]')).to_contain_text("3 ok")
    expect(page.locator("#timeline g.run")).to_have_count(5)
    shot("request")


def test_a_running_node_turns_from_running_to_succeeded(page: Any, ui: str, start: Start,
                                                        shot: Shot) -> None:
    rid = start("slow", b"2.5")
    page.goto(f"{ui}/flows/slow/requests/{rid}")
    nap = page.locator('tr.node-row[data-node="0_2_nap"]')
    expect(nap).to_have_attribute("data-state", "running", timeout=5000)
    expect(nap).to_contain_text("running or queued")
    expect(page.locator("#dag g.node.st-running > title")).to_have_text("0_2_nap")
    shot("request-running")
    # the page polls by itself: no reload here
    expect(nap).to_have_attribute("data-state", "succeeded", timeout=15000)
    expect(page.locator("#request-status")).to_have_text("success", timeout=10000)
    expect(page.locator("#dag g.node.st-succeeded")).to_have_count(3)
    # ended: the fragment stops polling
    expect(page.locator("#live")).not_to_have_attribute("hx-trigger", re.compile(".+"))


def test_pause_and_resume_from_the_request_page(page: Any, ui: str, start: Start,
                                                 wait_record: Wait) -> None:
    rid = start("slow", b"2")
    page.goto(f"{ui}/flows/slow/requests/{rid}")
    expect(page.get_by_role("button", name="Resume")).to_be_disabled()
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".flash.ok")).to_have_text("Request paused.")
    expect(page.locator("#request-status")).to_have_text("paused", timeout=10000)
    expect(page.get_by_role("button", name="Pause")).to_be_disabled()
    # the nap in flight finishes; the node after it is held
    finish = page.locator('tr.node-row[data-node="0_3_finish"]')
    expect(finish).to_have_attribute("data-state", "held", timeout=10000)
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".flash.ok")).to_have_text("Request resumed.")
    expect(page.locator("#request-status")).to_have_text("success", timeout=15000)
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    assert wait_record("slow", rid, lambda d: d["status"] == "success")["output"] == \
        "slept 2.0"


def test_requests_are_filtered_by_status_in_a_deep_link(page: Any, ui: str, start: Start,
                                                        wait_record: Wait,
                                                        shot: Shot) -> None:
    good = start("broken", b"ok")
    bad = start("broken", b"nope")
    wait_record("broken", good, lambda d: d["status"] == "success")
    wait_record("broken", bad, lambda d: d["status"] == "failure")
    page.goto(ui + "/flows/broken/requests")
    expect(page.locator("#requests")).to_contain_text(good)
    page.get_by_label("failure").check()
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"status=failure"))
    rows = page.locator("#requests tr.request-row")
    expect(rows.first).to_be_visible()
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.status)")) == {"failure"}
    expect(page.locator("#requests")).to_contain_text(bad)
    expect(page.locator("#requests")).not_to_contain_text(good)
    shot("requests")
    page.reload()  # the URL holds the whole view
    expect(page.get_by_label("failure")).to_be_checked()
    expect(page.locator("#requests")).not_to_contain_text(good)


def test_a_failed_request_shows_its_error_and_the_failing_node(page: Any, ui: str,
                                                                start: Start,
                                                                wait_record: Wait,
                                                                shot: Shot) -> None:
    rid = start("broken", b"  <img src=x onerror=alert(1)>  ")
    wait_record("broken", rid, lambda d: d["status"] == "failure")
    page.goto(f"{ui}/flows/broken/requests?status=failure")
    page.get_by_role("link", name=rid).click()
    expect(page.locator("#request-status")).to_have_text("failure")
    expect(page.locator("#request-error")).to_contain_text("invalid return status 422")
    check = page.locator('tr.node-row[data-node="0_2_check"]')
    expect(check).to_have_attribute("data-state", "failed")
    expect(check.locator(".node-error")).to_contain_text("Operation (reject) failed")
    expect(page.locator('tr.node-row[data-node="0_3_store"]')).to_have_attribute(
        "data-state", "not-reached")
    expect(page.locator("#dag g.node.st-failed > title")).to_have_text("0_2_check")
    # the captured output of the node before it (load strips the body), shown as text
    load_out = page.locator('#payloads tr.payload[data-node="0_1_load"][data-side="output"]')
    expect(load_out.locator("pre")).to_have_text("<img src=x onerror=alert(1)>")
    check_in = page.locator('#payloads tr.payload[data-node="0_2_check"][data-side="input"]')
    expect(check_in.locator("pre")).to_have_text("<img src=x onerror=alert(1)>")
    expect(page.get_by_role("button", name="Pause")).to_be_disabled()
    # the flows serve redrive and re-run: offered, and enabled because the request failed
    expect(page.locator("#controls button")).to_have_count(5)
    expect(page.get_by_role("button", name="Redrive")).to_be_enabled()
    expect(page.get_by_role("button", name="Rerun")).to_be_enabled()
    shot("request-failed")


def test_a_request_page_shows_its_log_lines_and_those_of_a_node(page: Any, ui: str,
                                                                 start: Start,
                                                                 wait_record: Wait,
                                                                 shot: Shot) -> None:
    rid = start("broken", b"<i>logged</i>")
    wait_record("broken", rid, lambda d: d["status"] == "failure")
    page.goto(f"{ui}/flows/broken/requests/{rid}")
    logs = page.locator("#logs")
    # the line of `reject`, called by the node check, is laid at that node's door
    called = logs.locator('tr.log-line[data-function="reject"]')
    expect(called).to_contain_text("reject: checking <<i>logged</i>>")
    expect(called.locator("td").nth(2)).to_have_text("check")
    # the flow's own line (the engine's) names no node
    own = logs.locator('tr.log-line[data-function="broken"]', has_text="Failed: Node(0_2_check)")
    expect(own.locator("td").nth(2)).to_have_text("flow")
    expect(page.locator("#logs i")).to_have_count(0)  # text, never markup
    check = page.locator('tr.node-row[data-node="0_2_check"] a.node-logs')
    expect(check).to_have_text("1")
    check.click()
    expect(page).to_have_url(re.compile(rf"/requests/{rid}/logs\?node=check$"))
    expect(page.locator("#logs tr.log-line")).to_have_count(1)
    expect(page.locator("#logs")).to_contain_text("reject: checking")
    shot("request-logs")


def test_bulk_stop_stops_the_selected_requests(page: Any, ui: str, start: Start,
                                               wait_record: Wait) -> None:
    ids = [start("slow", b"6"), start("slow", b"6")]
    page.goto(ui + "/flows/slow/requests?status=running")
    for rid in ids:
        page.get_by_label(f"select {rid}").check()
    page.get_by_role("button", name="Stop selected").click()
    expect(page.locator(".flash.ok")).to_contain_text("Stopped 2 request(s)")
    for rid in ids:
        wait_record("slow", rid, lambda d: d["status"] == "stopped")


def test_the_theme_toggle_switches_to_dark_and_stays(page: Any, ui: str, shot: Shot) -> None:
    page.goto(ui + "/flows/squares")
    page.get_by_role("button", name="Theme").click()
    expect(page.locator("html")).to_have_attribute("data-theme", re.compile("dark|light"))
    theme = page.locator("html").get_attribute("data-theme")
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", theme)
    if theme == "dark":
        shot("dark")
    page.keyboard.press("Tab")  # keyboard-usable: the first stop is the brand link
    assert page.evaluate("document.activeElement.textContent") == "faasflow tower"
    page.evaluate("localStorage.removeItem('tower-theme')")  # the next pages: the default


def test_a_count_on_the_flows_page_opens_the_filtered_request_list(page: Any, ui: str,
                                                                   start: Start,
                                                                   wait_record: Wait,
                                                                   shot: Shot) -> None:
    rid = start("broken", b"still not ok")
    wait_record("broken", rid, lambda d: d["status"] == "failure")
    page.goto(ui + "/")
    row = page.locator("#flows tr.flow-row", has_text="broken")
    expect(row).to_contain_text("failure")
    shot("flows")  # last, so the other tests' requests are counted on it
    row.get_by_role("link", name=re.compile("failure")).click()
    expect(page).to_have_url(re.compile(r"/ui/flows/broken/requests\?status=failure&since=1h$"))
    expect(page.locator("#requests")).to_contain_text(rid)
    assert set(page.locator("#requests tr.request-row").evaluate_all(
        "rs => rs.map(r => r.dataset.status)")) == {"failure"}
