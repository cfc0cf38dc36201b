"""The fleet page (issue #12, point 4) in Debian's headless Chromium: the app's HTTP functions served on
127.0.0.1 (:class:`tests.peers.functions_http.FunctionsHttpServer`, with the host's master-key check),
the page loaded with the key, its scripts reading ``/api/fleet/status`` and ``/api/operations``; the test
checks the table, the state colours and the operation in progress in the DOM Chromium rendered.

``FLEET_PAGE_SCREENSHOT=docs/fleet-page.png .venv/bin/python -m pytest tests/test_fleet_page.py`` also
writes the README's screenshot."""

from __future__ import annotations

import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.fleet_peers import fleet  # noqa: F401 - fixture
from tests.peers.functions_http import FunctionsHttpServer, chromium
from tests.test_fleet_status import bootstrapped  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[1]


class _Dom(HTMLParser):
    """Rows (``tr[data-cluster]``), badges (``span[data-state]``) and operations (``div[data-operation]``)."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict] = {}
        self.ops: list[str] = []
        self.badges: list[tuple[str, str]] = []
        self.text: list[str] = []
        self._row = None
        self._cells: list[str] | None = None
        self._cell = False
        self.loaded = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body" and a.get("data-loaded") == "true":
            self.loaded = True
        if tag == "tr" and "data-cluster" in a:
            self._row = a["data-cluster"]
            self.rows[self._row] = {"state": a.get("data-state"), "class": a.get("class"), "cells": []}
        if tag == "td" and self._row:
            self._cell = True
            self.rows[self._row]["cells"].append("")
        if tag == "span" and "data-state" in a:
            self.badges.append((a["data-state"], a.get("class", "")))
        if tag == "div" and "data-operation" in a:
            self.ops.append(a["data-operation"])

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None
        if tag == "td":
            self._cell = False

    def handle_data(self, data):
        self.text.append(data)
        if self._row and self._cell:
            self.rows[self._row]["cells"][-1] += data


@pytest.fixture
def served(bootstrapped):
    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is not installed: bash .ci/setup (apt-get install chromium)", pytrace=False)
    server = FunctionsHttpServer(bootstrapped.functions).start()
    yield bootstrapped, server
    server.stop()


def test_the_page_renders_the_fleet_and_the_operations_in_progress(served):
    fleet, server = served
    fleet.servers[3].stop()  # one cluster down
    fleet.vault_server.seed_kubeconfig("c99-kubeconfig", fleet.servers[0].kubeconfig())
    resp, pending = fleet.post_bootstrap(fleet.request([{"path": "clusters/c99", "kubeconfigSecret": "c99-kubeconfig"}]))
    assert resp.status_code == 202  # queued, no worker running: in progress

    dom = _Dom()
    dom.feed(chromium(f"{server.url}/api/fleet?code={server.master_key}", dump_dom=True))
    assert dom.loaded, "".join(dom.text)[-500:]
    assert set(dom.rows) == {"c00", "c01", "c02", "c03"}
    up = dom.rows["c00"]["cells"]
    assert up[:6] == ["c00", "ready", "v2.9.2", "v2.9.2", "True / True", up[5]] and "(behind)" not in up[5]
    assert up[9] == "bootstrap succeeded"
    down = dom.rows["c03"]
    assert down["state"] == "unreachable" and "row-unreachable" in down["class"]
    assert "cluster unreachable" in down["cells"][10]
    assert ("ready", "badge state-ready") in dom.badges and ("unreachable", "badge state-unreachable") in dom.badges
    assert dom.ops == [pending["id"]]  # the operation in progress
    assert "bootstrap v2.9.2" in "".join(dom.text) and "1 pending" in "".join(dom.text)
    # the page and the APIs it read were all asked with the key; nothing else was requested
    assert {(m, p) for m, p, s in server.requests} == {
        ("GET", "/api/fleet"), ("GET", "/api/fleet/status"), ("GET", "/api/operations"),
        ("GET", f"/api/operations/{pending['id']}")}
    assert all(s == 200 for _, _, s in server.requests)

    shot = os.environ.get("FLEET_PAGE_SCREENSHOT")
    target = ROOT / shot if shot else Path(fleet.bare).parent / "fleet-page.png"
    chromium(f"{server.url}/api/fleet?code={server.master_key}", screenshot=str(target), size="1280,520")
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_page_is_behind_the_operator_auth_and_escapes_what_clusters_say(served):
    fleet, server = served
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server.url}/api/fleet")
    assert info.value.code == 401
    with urllib.request.urlopen(f"{server.url}/api/fleet?code={server.master_key}") as resp:
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "frame-ancestors 'none'" in csp
        assert resp.headers["Referrer-Policy"] == "no-referrer"

    # a cluster whose Kustomization message carries markup: shown as text, never run
    hostile = "<img src=x onerror=\"document.title='owned'\"><b>bold</b>"
    ks = fleet.servers[0].get_object("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "flux-system")
    fleet.servers[0].set_status("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "flux-system", {
        **ks["status"], "conditions": [{"type": "Ready", "status": "False", "reason": "BuildFailed", "message": hostile,
                                        "lastTransitionTime": "2026-12-01T00:00:00Z"}]})
    html = chromium(f"{server.url}/api/fleet?code={server.master_key}", dump_dom=True)
    dom = _Dom()
    dom.feed(html)
    assert dom.rows["c00"]["state"] == "failed" and dom.rows["c00"]["cells"][10] == hostile
    assert "<title>Flux fleet</title>" in html and "<b>bold</b>" not in html
