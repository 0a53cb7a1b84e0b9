"""The status page (GET /) and its JSON (GET /v1/status.json): states with reasons, pipeline pictures, request rates,
checked in a real headless Chromium (Debian's, driven by its chromedriver)."""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
from conftest import RunningServer

from ovserve.config import load_config
from ovserve.server import Server, Settings

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL = "install Debian's chromium and chromium-driver (make test does: scripts/debian-packages.sh)"
IMAGE = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4) / 48


def status_config(repository: Path) -> dict[str, Any]:
    """The guide's model and pipeline, a model whose base path is missing and a pipeline naming a missing model."""
    models.save(models.classifier(), repository, "resnet")
    document = models.seed_config()
    document["model_config_list"].append({"config": {"name": "lost", "base_path": "nowhere"}})
    broken = json.loads(json.dumps(document["pipeline_config_list"][0]))
    broken["name"] = "brokenDAG"
    broken["nodes"][0]["model_name"] = "absent"
    document["pipeline_config_list"].append(broken)
    return document


@pytest.fixture
def server(repository: Path, serve: Callable[[dict[str, Any]], RunningServer]) -> RunningServer:
    return serve(status_config(repository))


def predict(server: RunningServer, image: np.ndarray = IMAGE) -> int:
    body = json.dumps({"inputs": {"0": image.tolist()}})
    return server.http("POST", "/v1/models/resnet:predict", body)[0]


def status(server: RunningServer) -> dict[str, Any]:
    code, headers, body = server.http("GET", "/v1/status.json")
    assert code == 200 and headers["content-type"] == "application/json"
    document: dict[str, Any] = json.loads(body)
    return document


def test_status_lists_states_reasons_and_request_totals(server: RunningServer) -> None:
    assert [predict(server) for _ in range(3)] == [200] * 3
    assert predict(server, np.zeros((1, 3, 5, 5), np.float32)) == 400
    document = status(server)
    assert document["ready"] is True and document["metrics"] == {"requests": True, "latency": True}
    by_name = {m["name"]: m for m in document["models"]}
    assert by_name["resnet"]["versions"] == [{"version": 1, "state": "AVAILABLE", "error_code": "OK", "message": ""}]
    assert by_name["resnet"]["default_version"] == 1
    requests = by_name["resnet"]["requests"]
    assert (requests["success"], requests["fail"], requests["count"]) == (3, 1, 3)  # latency: successes only
    assert sum(requests["buckets"]) == 3 and requests["sum_us"] > 0
    assert len(requests["buckets"]) == len(document["buckets_us"]) + 1
    lost = by_name["lost"]
    assert lost["versions"] == [] and lost["default_version"] is None
    assert "base path is invalid" in lost["error"] and "nowhere" in lost["error"]
    pipelines = {p["name"]: p for p in document["pipelines"]}
    assert pipelines["resnet50DAG"]["state"] == "AVAILABLE" and pipelines["resnet50DAG"]["nodes"] == 1
    broken = pipelines["brokenDAG"]
    assert (broken["state"], broken["error_code"]) == ("LOADING", "FAILED_PRECONDITION")
    assert "absent" in broken["message"]
    assert status(server)["models"] == document["models"]  # reading the status counts no request


def test_the_page_is_one_file_allowed_only_its_own_script(server: RunningServer) -> None:
    code, headers, body = server.http("GET", "/")
    assert code == 200 and headers["content-type"] == "text/html; charset=utf-8"
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy and "unsafe" not in policy
    assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"") and b"https://" not in body


def test_without_metrics_the_status_has_no_totals_and_the_page_says_how(repository: Path, browser: Any) -> None:
    config = load_config(models.write_config(repository, status_config(repository)))

    def look(port: int) -> tuple[dict[str, Any], str]:
        visit(browser, f"http://127.0.0.1:{port}/")
        wait_for(browser, "return document.body.dataset.loaded === 'true'")
        notice = browser.execute_script(
            "const n = document.getElementById('metrics-off'); return n.hidden ? '' : n.innerText"
        )
        return fetch_json(port, "/v1/status.json"), notice

    async def scenario() -> tuple[dict[str, Any], str]:
        server = Server(config, Settings(rest_port=0, rest_bind_address="127.0.0.1"))  # metrics off by default
        await server.start()
        await server.loaded()
        try:
            return await asyncio.to_thread(look, server.rest_port or 0)
        finally:
            await server.stop(grace=1)

    document, notice = asyncio.run(scenario())
    assert "--metrics_enable" in notice
    assert document["metrics"] == {"requests": False, "latency": False}
    assert [m["requests"] for m in document["models"]] == [None, None]
    states = {m["name"]: [v["state"] for v in m["versions"]] for m in document["models"]}
    assert states == {"lost": [], "resnet": ["AVAILABLE"]}


def fetch_json(port: int, path: str) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        connection.close()


# --- in a real browser ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None or shutil.which(CHROMEDRIVER) is None:
        pytest.fail(INSTALL)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))  # no driver download: Debian's
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def visit(driver: Any, url: str) -> None:
    """Leave the page before (its refreshes would hit a server stopped since), forget its console, open `url`."""
    driver.get("about:blank")
    problems(driver)
    driver.get(url)


def wait_for(driver: Any, script: str, seconds: float = 20) -> Any:
    """Until `script` (a JavaScript function body) returns a truthy value in the page; that value."""
    deadline = time.monotonic() + seconds
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        assert time.monotonic() < deadline, f"the page never satisfied: {script}"
        time.sleep(0.05)


def problems(driver: Any) -> list[str]:
    """The console's errors since the last call (a refused request or a Content-Security-Policy violation)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


class Traffic:
    """Predictions sent in the background (bounded) while the page measures them."""

    def __init__(self, server: RunningServer, most: int = 2000) -> None:
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, args=(server, most), daemon=True)
        self.thread.start()

    def _run(self, server: RunningServer, most: int) -> None:
        while not self.stop.is_set() and self.sent < most:
            assert predict(server) == 200
            self.sent += 1
            self.stop.wait(0.02)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def test_the_page_in_chromium_shows_states_reasons_pictures_and_rates(
    server: RunningServer, browser: Any, tmp_path: Path
) -> None:
    visit(browser, server.url + "/?refresh=0.3")
    wait_for(browser, "return document.body.dataset.loaded === 'true'")
    rows = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#models tbody tr[data-model]')]"
        ".map((r) => [r.dataset.model, r.innerText]))"
    )
    assert set(rows) == {"resnet", "lost"}
    assert "1 (default)" in rows["resnet"] and "AVAILABLE" in rows["resnet"]
    assert "base path is invalid" in rows["lost"]
    cards = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('[data-pipeline]')]"
        ".map((c) => [c.dataset.pipeline, c.innerText]))"
    )
    assert set(cards) == {"resnet50DAG", "brokenDAG"}
    assert "AVAILABLE" in cards["resnet50DAG"]
    assert "FAILED_PRECONDITION" in cards["brokenDAG"] and "absent" in cards["brokenDAG"]
    for name in ("resnet50DAG", "brokenDAG"):  # both drawn (the broken one with its reason) and laid out on the page
        size = wait_for(
            browser,
            f"const img = document.querySelector('[data-pipeline=\"{name}\"] img.graph');"
            "const box = img && img.getBoundingClientRect();"
            "return img && img.complete && img.naturalWidth > 0 && box.width > 0 && [img.naturalWidth, box.height];",
        )
        assert size[0] > 100 and size[1] > 50, size
    traffic = Traffic(server)
    try:  # the latency columns fill from the metrics' histogram once requests land between two refreshes
        cells = wait_for(
            browser,
            "const cells = [...document.querySelectorAll('tr[data-model=\"resnet\"] td.num')].map((c) => c.innerText);"
            "return cells[2].endsWith('ms') && cells[3].startsWith('≤') && cells;",
        )
        assert float(cells[0]) > 0 and float(cells[1]) == 0, cells  # requests/s, errors/s
    finally:
        traffic.close()
    wait_for(browser, f"return document.querySelector('tr[data-model=\"resnet\"] td:nth-child(8)').innerText === "
             f"'{traffic.sent}'")  # fmt: skip
    screenshot = tmp_path / "status.png"
    assert browser.save_screenshot(str(screenshot))
    print(f"status page screenshot: {screenshot}")
    assert problems(browser) == []


def test_swagger_ui_renders_the_document_from_local_files(server: RunningServer, browser: Any, tmp_path: Path) -> None:
    visit(browser, server.url + "/docs")
    paths = wait_for(
        browser,
        "const paths = [...document.querySelectorAll('.opblock-summary-path')].map((p) => p.innerText);"
        "return paths.length > 20 && paths;",
    )
    assert "/v2/models/{name}/infer" in [p.replace("\u200b", "") for p in paths]
    resources = browser.execute_script("return performance.getEntriesByType('resource').map((r) => r.name)")
    assert resources and all(r.startswith(server.url + "/") for r in resources), resources
    screenshot = tmp_path / "docs.png"
    assert browser.save_screenshot(str(screenshot))
    print(f"Swagger UI screenshot: {screenshot}")
    assert problems(browser) == []
