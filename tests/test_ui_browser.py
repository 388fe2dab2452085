"""`qemlflow ui` in a real browser: Debian's Chromium, headless, driven by Selenium.

The store is filled by real commands (tests/ui_store.py: two runs, a registered and
promoted model, a screen), `qemlflow ui` runs as a subprocess on a free port, and one
browser session walks the pages through the selectors of the UI's contract (ids and
data- attributes, not layout). The last test starts a real `qemlflow serve` with a
1-second monitoring window, sends it 2,000 molecules far from the training set, stops it
and expects the out-of-domain alert on the monitor page.

Screenshots of the main pages are written to docs/screenshots/ as the tests pass them
(``QEMLFLOW_SCREENSHOT_DIR`` sends them elsewhere). Without Chromium or chromedriver the
module is skipped, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pandas as pd
import pytest
from tests.extras import missing
from tests.ui_store import MODEL, UiStore, bearer, build_store, prediction_service, ui_server

pytestmark = pytest.mark.slow

SHOTS = Path(
    os.environ.get("QEMLFLOW_SCREENSHOT_DIR")
    or Path(__file__).resolve().parents[1] / "docs/screenshots"
)
WIDTH, HEIGHT = 1400, 900
MAX_SHOT_HEIGHT = 2400  # a long page is cut here: the top says what the page is
NAV = ["runs", "datasets", "models", "screens", "monitor", "audit", "predict"]


def _missing(what: str) -> NoReturn:
    missing(f"{what} is missing: run bash .ci/install-chromium.sh (and pip install -e '.[dev]')")


def _chromium() -> tuple[str, str]:
    """Debian's Chromium and chromedriver (skip, or fail under CI=true, when missing)."""
    try:
        import selenium  # noqa: F401
    except ModuleNotFoundError:
        _missing("selenium")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None:
        _missing("Chromium")
    if driver is None:
        _missing("chromedriver (Debian package chromium-driver)")
    assert chromium is not None and driver is not None
    return chromium, driver


@dataclass(frozen=True)
class Ui:
    """The store the commands built, and the URL `qemlflow ui` answers on."""

    built: UiStore
    url: str


@pytest.fixture(scope="session")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    """A store built by real commands, served by `qemlflow ui` (a subprocess) until the
    session ends. The commands get an environment of their own (ui_store.command_env):
    the per-test one of conftest.py is not made yet when a session fixture starts."""
    _chromium()  # before building anything
    built = build_store(tmp_path_factory.mktemp("ui"))
    with ui_server(built) as url:
        yield Ui(built, url)


@pytest.fixture(scope="module")
def browser(ui: Ui, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the module, through /usr/bin/chromedriver (Selenium
    Manager is never asked to download a driver)."""
    from selenium import webdriver

    chromium, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    service = webdriver.ChromeService(executable_path=driver_path)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_window_size(WIDTH, HEIGHT)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


# -- helpers ---------------------------------------------------------------------------


def _wait(browser: Any, timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout)


def _one(browser: Any, css: str, timeout: float = 20) -> Any:
    """The first element matching ``css``, once it is in the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    return _wait(browser, timeout).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, css)),
        message=f"no {css} on {browser.current_url}",
    )


def _all(browser: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(browser.find_elements(By.CSS_SELECTOR, css))


def _open(browser: Any, ui: Ui, path: str, page: str) -> None:
    """Load ``path`` and wait for its ``main[data-page=page]``."""
    browser.get(ui.url + path)
    _one(browser, f"main#page[data-page={page}]")
    _layout_intact(browser)


def _layout_intact(browser: Any) -> None:
    """The layout's own parts survive the page's context (a page variable named like a
    layout one would replace it): the footer names the package version."""
    from qemlflow import __version__

    footer = _one(browser, "footer").text.strip()
    assert footer == f"QeMLflow {__version__}", f"{browser.current_url}: footer {footer!r}"


def _until(browser: Any, check: Callable[[], Any], message: str, timeout: float = 20) -> Any:
    return _wait(browser, timeout).until(lambda _: check(), message=message)


def _console_errors(browser: Any) -> list[str]:
    """SEVERE console entries since the last call (a missing favicon is no error)."""
    return [
        entry["message"]
        for entry in browser.get_log("browser")
        if "favicon.ico" not in entry["message"]
    ]


def _screenshot(browser: Any, name: str) -> Path:
    """Save the page (its full height, up to MAX_SHOT_HEIGHT) as docs/screenshots/NAME.png."""
    _layout_intact(browser)
    metrics = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})
    height = min(max(float(metrics["cssContentSize"]["height"]), HEIGHT), MAX_SHOT_HEIGHT)
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1},
        },
    )
    return _save(name, base64.b64decode(shot["data"]))


def _save(name: str, png: bytes) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    path.write_bytes(png)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def _rejected_rows(ui: Ui) -> int:
    """How many rows of the sample the first run rejected (its rejected.csv): the invalid
    and the empty SMILES, and what the chemistry policy refuses."""
    rows = pd.read_csv(ui.built.folder / "esol-forest" / "rejected.csv")
    assert len(rows) >= 2
    return len(rows)


# -- the server, without a browser -----------------------------------------------------


def test_the_ui_answers_on_loopback_and_refuses_a_foreign_host(ui: Ui) -> None:
    home = httpx.get(ui.url + "/", timeout=30)
    assert home.status_code == 200 and "text/html" in home.headers["content-type"]
    assert ui.url.startswith("http://127.0.0.1:")
    for path in ("/runs", f"/runs/{ui.built.run_ids['esol-forest']}", "/models", "/audit"):
        assert httpx.get(ui.url + path, timeout=30).status_code == 200, path
    # DNS rebinding: a page elsewhere that resolves its own name to 127.0.0.1
    rebound = httpx.get(ui.url + "/", headers={"Host": "attacker.example"}, timeout=30)
    assert rebound.status_code == 400


# -- pages in the browser --------------------------------------------------------------


def test_every_nav_link_opens_its_page_with_local_assets_only(browser: Any, ui: Ui) -> None:
    _open(browser, ui, "/", "home")
    _console_errors(browser)
    stats = _all(browser, "#overview .stat")
    assert len(stats) >= 4, "home: #overview should show runs, datasets, models, audit events"
    assert len(_all(browser, "#latest-runs tr[data-run-id]")) == 2
    assert MODEL in _one(browser, "#production").text
    _screenshot(browser, "home")

    keys = [a.get_attribute("data-nav") for a in _all(browser, "header nav a[data-nav]")]
    assert keys == NAV
    for key in [*NAV, "home"]:
        _one(browser, f"a[data-nav={key}]").click()
        _one(browser, f"main#page[data-page={key}]")
        resources = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        outside = [r for r in resources if not r.startswith(ui.url + "/")]
        assert not outside, f"{key}: the page loads assets from elsewhere: {outside}"
        assert not _console_errors(browser), f"{key}: console errors"


def test_filtering_the_runs_table(browser: Any, ui: Ui) -> None:
    _open(browser, ui, "/runs", "runs")
    rows = _all(browser, "#runs-table tr[data-run-id]")
    assert {r.get_attribute("data-run-id") for r in rows} == set(ui.built.run_ids.values())
    metric = _one(browser, "#runs-table td.metric").text
    assert "[" in metric, f"td.metric should show the CI: {metric!r}"
    _screenshot(browser, "runs")

    box = _one(browser, "#runs-filter #runs-q")
    box.clear()
    box.send_keys("knn")
    _one(browser, "#runs-apply").click()
    _until(
        browser,
        lambda: len(_all(browser, "#runs-table tr[data-run-id]")) == 1,
        "typing 'knn' in #runs-q should leave one run",
    )
    (row,) = _all(browser, "#runs-table tr[data-run-id]")
    assert row.get_attribute("data-run-id") == ui.built.run_ids["esol-knn-scaffold"]
    assert "esol-knn-scaffold" in row.find_element("css selector", "td.name").text
    assert "q=knn" in browser.current_url
    assert _one(browser, "#runs-q").get_attribute("value") == "knn"  # the form keeps it


def test_the_runs_table_sorts_by_name_both_ways(browser: Any, ui: Ui) -> None:
    def names() -> list[str]:
        return [c.text for c in _all(browser, "#runs-table tr[data-run-id] td.name")]

    _open(browser, ui, "/runs", "runs")
    _one(browser, "#runs-table a[data-sort=name]").click()
    _until(browser, lambda: "sort=name" in browser.current_url, "a[data-sort=name] sorts")
    first = names()
    assert first in (sorted(first), sorted(first, reverse=True)) and len(first) == 2
    _one(browser, "#runs-table a[data-sort=name]").click()
    _until(browser, lambda: names() == first[::-1], "a second click reverses the order")


def test_comparing_two_runs_shows_the_config_diff(browser: Any, ui: Ui) -> None:
    _open(browser, ui, "/runs", "runs")
    boxes = _all(browser, "#compare-form input[type=checkbox][name=run]")
    assert len(boxes) == 2
    for box in boxes:
        box.click()
    _one(browser, "#compare-button").click()
    _one(browser, "#config-diff tr.diff")
    assert "/runs/compare" in browser.current_url
    columns = {
        th.get_attribute("data-run-id") for th in _all(browser, "#compare-metrics th[data-run-id]")
    }
    assert columns == set(ui.built.run_ids.values())
    differing = " ".join(row.text for row in _all(browser, "#config-diff tr.diff"))
    for key in ("model.estimator", "split.method"):
        assert key in differing, f"#config-diff tr.diff should name {key}: {differing!r}"
    assert _all(browser, "#config-diff tr.same"), "equal keys are listed too (tr.same)"
    _one(browser, "#compare-plots")
    _screenshot(browser, "compare")


def test_the_run_page_draws_lineage_and_plot_tooltips(browser: Any, ui: Ui) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    run_id = ui.built.run_ids["esol-forest"]
    _open(browser, ui, f"/runs/{run_id}", "runs")
    assert "esol-forest" in _one(browser, "h1").text

    raw = _one(browser, "svg#lineage-graph g.node[data-kind=raw]")
    digest = hashlib.sha256((ui.built.folder / "small_esol.csv").read_bytes()).hexdigest()
    assert digest[:8] in raw.text, f"the raw node should show the file's sha256: {raw.text!r}"
    kinds = {n.get_attribute("data-kind") for n in _all(browser, "svg#lineage-graph g.node")}
    assert {"run", "step", "raw"} <= kinds
    assert _all(browser, "svg#lineage-graph path.edge")
    section = _one(browser, "section#lineage")
    browser.execute_script("arguments[0].scrollIntoView()", section)
    _save("lineage", section.screenshot_as_png)

    assert _all(browser, "#metrics-table tr[data-metric=rmse]")
    assert _all(browser, "#predictions-table tr.prediction svg.depiction")
    reasons = [c.text for c in _all(browser, "#rejected-table tr.rejected td.reason")]
    assert len(reasons) == _rejected_rows(ui) and all(reasons), reasons
    assert {c.text for c in _all(browser, "#steps-table td.cache")} <= {"hit", "computed"}
    assert _all(browser, "#steps-table tr[data-step]")

    point = _one(browser, "#plots svg.plot.parity circle.point[data-tooltip][data-depict]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", point)
    ActionChains(browser).move_to_element(point).perform()
    tip = _one(browser, ".tooltip", timeout=10)
    assert tip.is_displayed()
    assert tip.text.strip() == point.get_attribute("data-tooltip").strip()
    picture = tip.find_element("css selector", "img")
    _until(
        browser,
        lambda: browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", picture
        ),
        "the tooltip's molecule (data-depict) should load",
    )
    _screenshot(browser, "run")


def test_models_show_the_production_alias_and_its_history(browser: Any, ui: Ui) -> None:
    _open(browser, ui, "/models", "models")
    row = _one(browser, f"#models-table tr[data-model={MODEL}]")
    assert "production" in row.text
    _screenshot(browser, "models")
    row.find_element("css selector", "a").click()
    _one(browser, "#versions-table tr[data-version='1']")
    alias = _one(browser, "#aliases .badge[data-alias=production]")
    assert "v1" in alias.text, alias.text
    history = _all(browser, "#history-table tr.history")
    assert history and history[0].find_element("css selector", "td.gates").text.strip()
    assert not _all(browser, "form#promote-form"), "read-only without --allow-changes"
    assert "read-only" in _one(browser, "header .store").text
    _screenshot(browser, "model")


def test_datasets_show_row_accounting(browser: Any, ui: Ui) -> None:
    _open(browser, ui, "/datasets", "datasets")
    _one(browser, "#datasets-table tr[data-dataset-id] a").click()
    _one(browser, "#row-accounting .stat")
    stats = [s.text.lower() for s in _all(browser, "#row-accounting .stat")]
    rejected = [s for s in stats if "rejected" in s]
    count = str(_rejected_rows(ui))  # as the run's rejected.csv counts them
    assert rejected and re.search(rf"(?<![\d.,]){count}(?![\d.,])", rejected[0]), stats
    _one(browser, "#label-distribution svg.plot")


def test_the_completed_screen_lists_its_hits(browser: Any, ui: Ui) -> None:
    _open(browser, ui, "/screens", "screens")
    row = _one(browser, "#screens-table tr.screen")
    assert MODEL in row.text
    _screenshot(browser, "screens")
    row.find_element("css selector", "a").click()
    _one(browser, "#hits-table tr.hit svg.depiction")


def test_the_audit_filter_narrows_rows_and_verification_is_sound(browser: Any, ui: Ui) -> None:
    _open(browser, ui, "/audit", "audit")
    state = _one(browser, "#verification [data-state]", timeout=30)
    assert state.get_attribute("data-state") == "sound", state.text
    assert _one(browser, "#verification").get_attribute("data-loaded") == "true"
    every = _all(browser, "#audit-table tr[data-seq]")
    actions = [r.find_element("css selector", "td.action").text for r in every]
    assert "model.registered" in actions and len(set(actions)) > 1, actions
    _screenshot(browser, "audit")

    box = _one(browser, "#audit-filter #audit-action")
    box.clear()
    box.send_keys("model.registered")
    _one(browser, "#audit-apply").click()
    _until(
        browser,
        lambda: 0 < len(_all(browser, "#audit-table tr[data-seq]")) < len(every),
        "#audit-action should narrow the rows",
    )
    shown = {c.text for c in _all(browser, "#audit-table tr[data-seq] td.action")}
    assert shown == {"model.registered"}

    box = _one(browser, "#audit-actor")
    box.clear()
    box.send_keys("nobody-at-all")
    _one(browser, "#audit-apply").click()
    _until(
        browser,
        lambda: (
            "actor=nobody-at-all" in browser.current_url
            and not _all(browser, "#audit-table tr[data-seq]")
        ),
        "an actor nobody is should leave no rows",
    )


def test_a_prediction_from_the_predict_page(browser: Any, ui: Ui) -> None:
    from selenium.webdriver.support.ui import Select

    _open(browser, ui, "/predict", "predict")
    choice = Select(_one(browser, "#predict-form select#predict-model"))
    values = [o.get_attribute("value") for o in choice.options]
    wanted = next((v for v in values if v == f"{MODEL}@production"), None) or next(
        v for v in values if v.startswith(MODEL)
    )
    choice.select_by_value(wanted)
    box = _one(browser, "#predict-smiles")
    box.clear()
    box.send_keys("CCO\nc1ccccc1O\nC1CC(nosmiles")
    _one(browser, "#predict-button").click()
    _one(browser, "table#predict-results tr.prediction")
    rows = _all(browser, "table#predict-results tr.prediction")
    assert len(rows) == 2
    for row in rows:
        row.find_element("css selector", "svg.depiction")
        float(row.find_element("css selector", "td.value").text.replace("−", "-"))
        assert row.find_element("css selector", "td.interval").text.strip()
        assert row.find_element("css selector", "td.domain").text.strip()
    assert _all(browser, "table#predict-results .neighbours svg.depiction")
    assert len(_all(browser, "table#predict-results tr.invalid")) == 1
    _screenshot(browser, "predict")


def _far_molecules(n: int = 2000) -> list[str]:
    """Peptides and inorganic salts: nothing like ESOL's small organic molecules."""
    from tests.test_monitoring import _INORGANIC, _peptides

    far = _peptides(n // 2) + _INORGANIC * (n // 2 // len(_INORGANIC))
    random.Random(1).shuffle(far)
    return far


def test_an_alert_appears_after_a_drifted_stream(browser: Any, ui: Ui) -> None:
    _open(browser, ui, f"/monitor/{MODEL}", "monitor")
    _one(browser, "main#page p.empty")  # no traffic yet: says what to run
    assert not _all(browser, ".alert[data-alert=out_of_domain]")

    far = _far_molecules()
    with (
        prediction_service(ui.built, window_seconds=1) as service,
        httpx.Client(base_url=service, headers=bearer(ui.built.api_key), timeout=120) as client,
    ):
        for start in range(0, len(far), 200):
            answer = client.post("/predict", json={"smiles": far[start : start + 200]})
            assert answer.status_code == 200, answer.text
    # stopped: the service has written its open window to the store

    _open(browser, ui, f"/monitor/{MODEL}", "monitor")
    alert = _one(browser, "#alerts .alert[data-alert=out_of_domain]")
    assert alert.is_displayed()
    assert _one(browser, "#monitor-stats").text.strip()
    _screenshot(browser, "monitor")
    _open(browser, ui, "/monitor", "monitor")
    _one(browser, f"#monitor-table tr[data-model={MODEL}] .badge[data-state=alert]")
