"""A real headless Chromium opens a generated report and a running dashboard on PostgreSQL.

Each test asserts that the plotly figures exist and hold data, that the page logged no error,
and keeps a screenshot under ``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from report_studies import build_small_study

from vivit_hpo.report.build import publish_to_dashboard, write_study_report

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
        reason="needs Debian's chromium and chromium-driver at /usr/bin (apt install chromium "
        "chromium-driver)",
    ),
]

# Each figure: its data traces, and whether it has finished drawing.
_PLOTS_JS = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(
    el => [el.id, el.data ? el.data.length : -1, Boolean(el._fullLayout)]);
"""


@pytest.fixture(scope="module")
def driver() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--enable-unsafe-swiftshader",  # WebGL (parallel coordinates) in software, no warning
        "--window-size=1300,1400",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    d.set_page_load_timeout(60)
    try:
        yield d
    finally:
        d.quit()


def _wait_for_plots(driver, count: int, timeout: float = 60.0) -> list[list]:
    """Poll until ``count`` plotly figures have drawn; returns [id, traces, drawn] of each."""
    deadline = time.monotonic() + timeout
    plots: list[list] = []
    while time.monotonic() < deadline:
        plots = driver.execute_script(_PLOTS_JS)
        if len(plots) >= count and all(drawn for _, _, drawn in plots):
            return plots
        time.sleep(0.5)
    raise AssertionError(f"only {len(plots)} of {count} plotly figures drew: {plots}")


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _screenshot(driver, name: str, max_height: int = 14000) -> Path:
    """A full-page screenshot in test-artifacts/ (the window grown to the page's height)."""
    ARTIFACTS.mkdir(exist_ok=True)
    width = driver.execute_script("return window.outerWidth")
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(width, min(max(height + 100, 800), max_height))
    time.sleep(1.0)  # let plotly redraw at the new size
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    driver.set_window_size(1300, 1400)
    return path


def test_report_renders_in_chromium(
    driver, sqlite_url: str, tiny_run: Path, sim_dir: Path, tmp_path: Path
) -> None:
    build_small_study(sqlite_url, "browser", best_dir=tiny_run, data=sim_dir)
    out = tmp_path / "report.html"
    write_study_report(sqlite_url, "browser", out)
    expected = out.read_text().count('class="plotly-graph-div"')
    assert expected == 11

    driver.get(out.as_uri())
    plots = _wait_for_plots(driver, expected)
    assert len(plots) == expected
    assert all(n > 0 for _, n, _ in plots), plots  # every figure holds data
    text = driver.execute_script("return document.body.innerText")
    assert "Study summary" in text and "Best trial (6): Attention" in text
    assert _errors(driver) == []
    _screenshot(driver, "report.png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _dashboard(url: str, artifacts: Path) -> Iterator[str]:
    """``vivit-hpo dashboard`` as a real process; yields its base address once it answers."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    log = artifacts / "dashboard.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vivit_hpo",
                "dashboard",
                "--storage",
                url,
                "--port",
                str(port),
                "--artifacts",
                str(artifacts),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the dashboard exited: {log.read_text()}"
            try:
                with urllib.request.urlopen(f"{base}/api/meta", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the dashboard never answered: {log.read_text()}"
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    printed = log.read_text()
    assert f"listening on http://127.0.0.1:{port}/dashboard/" in printed
    assert "postgres@" in printed or "postgresql" in printed


@pytest.mark.postgres
def test_dashboard_renders_a_postgresql_study(
    driver, pg_study: tuple[str, optuna.Study], tmp_path: Path
) -> None:
    url, study = pg_study
    artifacts = tmp_path / "artifacts"
    result = write_study_report(url, study.study_name, tmp_path / "study-report.html")
    _, graphs = publish_to_dashboard(url, study.study_name, result, artifacts)

    with _dashboard(url, artifacts) as base:
        driver.get(f"{base}/dashboard/studies/{study._study_id}")
        # The dashboard's own history, importance, timeline and intermediate-value plots,
        # and the report's figures it shows as the study's graph objects.
        plots = _wait_for_plots(driver, 4 + len(graphs))
        ids = {i for i, _, _ in plots}
        assert {f"user-defined-plot:{g}" for g in graphs} <= ids
        assert {"plot-history", "graph-intermediate-values"} <= ids
        assert all(n > 0 for _, n, _ in plots), plots
        _screenshot(driver, "dashboard-study.png")
        # The report is listed among the study's artifacts.
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        deadline = time.monotonic() + 20
        while "study-report.html" not in driver.execute_script("return document.body.innerText"):
            assert time.monotonic() < deadline, "the uploaded report is not listed"
            time.sleep(0.5)

        # A trial page shows the search's user attributes.
        driver.get(f"{base}/dashboard/studies/{study._study_id}/trials")
        deadline = time.monotonic() + 20
        while "params_count" not in driver.execute_script("return document.body.innerText"):
            assert time.monotonic() < deadline, "trial user attributes are not shown"
            time.sleep(0.5)
        text = driver.execute_script("return document.body.innerText")
        assert "val_bps_per_session" in text and "flops_per_sample" in text
        assert _errors(driver) == []
        _screenshot(driver, "dashboard-trials.png")
