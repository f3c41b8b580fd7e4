"""The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by Selenium against the real API and a Celery worker on the embedded backend.

Screenshots go to the test's tmp_path and, when ANNLAB_SCREENSHOT_DIR is set, there too
(`ANNLAB_SCREENSHOT_DIR=docs/images` makes the README's pictures).
"""

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service import Service, running

pytestmark = pytest.mark.service

CHROMIUM = next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)
CHROMEDRIVER = shutil.which("chromedriver")
WAIT = 120  # seconds: a loaded machine trains slowly
MLP = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 8, "batch_size": 16}}


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "no Chromium or chromedriver on PATH (Debian: apt-get install chromium "
            "chromium-driver; `make test` installs them when it runs as root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1000")
    # No name resolves but this machine's: a page that needs the network shows it here.
    options.add_argument(
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # for failure messages
    driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API and one worker on SQLite and kombu's SQLite broker, as `make run` starts them."""
    with running("embedded", tmp_path_factory.mktemp("dashboard")) as svc:
        yield svc


def wait_until(driver, condition, what: str, timeout: float = WAIT):
    """condition(driver), once it is true; an element that the page's polling replaced while
    it was read (stale) is looked up again."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
    )
    try:
        return wait.until(lambda d: condition(d))
    except TimeoutException:
        logs = "\n".join(str(entry) for entry in driver.get_log("browser"))
        raise AssertionError(f"timed out waiting for {what}; browser console:\n{logs}") from None


def screenshot(driver, tmp_path: Path, name: str) -> None:
    """Save the whole page (up to 3000 px high) as `name`.png."""
    height = driver.execute_script("return document.body.scrollHeight")
    # The window is taller than the page it shows by its (headless) frame.
    driver.set_window_size(1400, min(max(height + 150, 400), 3000))
    paths = [tmp_path / f"{name}.png"]
    if folder := os.environ.get("ANNLAB_SCREENSHOT_DIR"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        paths.append(Path(folder) / f"{name}.png")
    for path in paths:
        assert driver.save_screenshot(str(path)), path
        print(f"screenshot: {path.resolve()}")
    driver.set_window_size(1400, 1000)


def text(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def listed_status(driver, job_id: str) -> str | None:
    """The status the job list shows for a job (None: not listed)."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"]')
    return rows[0].get_attribute("data-status") if rows else None


def test_submit_follow_list_and_compare(browser, embedded: Service, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(embedded.url + "/")
    assert driver.current_url == embedded.url + "/ui"
    wait_until(driver, lambda d: "0 jobs" in text(d, "#count"), "the empty job list")

    # The form: a bad document shows the API's 422, field by field, and stays on the page.
    driver.get(embedded.url + "/ui/new")
    document = driver.find_element(By.ID, "document")
    document.clear()
    document.send_keys('{"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 0}}')
    driver.find_element(By.ID, "submit").click()
    wait_until(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, '#error-list li[data-field="train.epochs"]'),
        "the 422 naming train.epochs",
    )
    assert "/ui/new" in driver.current_url
    screenshot(driver, tmp_path, "dashboard-new")

    # A good one opens the job's page, whose curves grow as epochs finish, until it succeeds.
    document.clear()
    document.send_keys(json.dumps(MLP))
    driver.find_element(By.ID, "submit").click()
    wait_until(driver, lambda d: "/ui/jobs/" in d.current_url, "the job's page")
    job_id = driver.current_url.rsplit("/", 1)[1]
    epochs_plotted = "return Number(document.getElementById('curves').dataset.epochs)"
    wait_until(driver, lambda d: d.execute_script(epochs_plotted) >= 2, "two epochs plotted")
    wait_until(driver, lambda d: text(d, "#status") == "succeeded", "the job to succeed")
    assert embedded.job(job_id)["status"] == "succeeded"
    wait_until(driver, lambda d: d.execute_script(epochs_plotted) == 8, "all 8 epochs plotted")
    # The loss chart's own data: train and val loss at every epoch the API recorded.
    loss = driver.execute_script("return document.getElementById('curves').charts.loss.data")
    history = embedded.metrics(job_id)
    assert loss[0] == [row["epoch"] for row in history] == list(range(9))  # from epoch 0
    assert loss[1:] == [[row[name] for row in history] for name in ("train_loss", "val_loss")]
    accuracy = embedded.job(job_id)["result"]["test_accuracy"]
    shown = driver.find_element(By.XPATH, "//table[@id='result']//th[.='test_accuracy']/../td")
    assert shown.text == f"{accuracy:.4f}" and accuracy > 0.8
    # The API's own picture of the record, drawn into the page (the key-carrying fetch works).
    wait_until(
        driver,
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#pictures img')]"
            ".some(img => img.alt === 'learning_curves.png' && img.naturalWidth > 0)"
        ),
        "the learning-curves picture",
    )
    screenshot(driver, tmp_path, "dashboard-job")
    # A job scoring its samples after training shows that phase and its own percent.
    scoring = embedded.job(job_id) | {"status": "running", "result": None}
    scoring["progress"] |= {
        "phase": "scoring samples",
        "phase_percent": 45.0,
        "phase_step": 360,
        "phase_steps": 800,
        "eta_seconds": 180.0,
    }
    driver.execute_script("showJob(arguments[0])", scoring)
    assert text(driver, "#progress-text") == (
        "45% · epoch 8 of 8 · scoring samples 45% (step 360 of 800) · about 3 min left"
    )
    assert driver.execute_script("return document.getElementById('bar').style.width") == "45%"

    # The list follows jobs live: a second MLP (another learning rate), one that diverges,
    # and a long one, whose page draws each new epoch and cancels it.
    other = embedded.submit({**MLP, "train": {**MLP["train"], "optimizer": {"lr": 0.003}}})
    diverging = embedded.submit(
        {
            "family": "mlp",
            "dataset": {"name": "function1d"},
            "train": {"optimizer": {"name": "sgd", "lr": 50.0}, "epochs": 5},
        }
    )
    long = embedded.submit({**MLP, "train": {"epochs": 5000, "batch_size": 8}})
    driver.get(embedded.url + "/ui")
    wait_until(driver, lambda d: listed_status(d, other["id"]) == "succeeded", "2nd job's end")
    wait_until(driver, lambda d: listed_status(d, diverging["id"]) == "failed", "the failure")
    wait_until(driver, lambda d: listed_status(d, long["id"]) == "running", "the long job to run")
    epoch_cell = f'tr[data-job-id="{long["id"]}"] td:nth-child(7)'  # "epoch/epochs"
    wait_until(driver, lambda d: int(text(d, epoch_cell).split("/")[0]) >= 2, "epochs listed")
    assert "4 jobs" in text(driver, "#count")
    screenshot(driver, tmp_path, "dashboard-list")

    driver.get(f"{embedded.url}/ui/jobs/{long['id']}")
    wait_until(driver, lambda d: d.execute_script(epochs_plotted) >= 1, "the long job's curves")
    plotted = driver.execute_script(epochs_plotted)
    wait_until(driver, lambda d: d.execute_script(epochs_plotted) > plotted, "a new epoch drawn")
    driver.find_element(By.ID, "cancel").click()
    wait_until(driver, lambda d: text(d, "#status") == "cancelled", "the page to show the cancel")
    assert embedded.job(long["id"])["status"] == "cancelled"

    # Compare the two MLPs: their curves on shared axes, and the learning rate that differs.
    driver.get(embedded.url + "/ui")
    wait_until(driver, lambda d: listed_status(d, long["id"]) == "cancelled", "the list")
    for job in (job_id, other["id"]):
        tick = f'tr[data-job-id="{job}"] input'
        wait_until(driver, lambda d: d.find_element(By.CSS_SELECTOR, tick).click() or True, tick)  # noqa: B023
    wait_until(driver, lambda d: d.find_element(By.ID, "compare").is_enabled(), "two ticked")
    driver.find_element(By.ID, "compare").click()
    wait_until(driver, lambda d: "/ui/compare?ids=" in d.current_url, "the compare page")
    wait_until(driver, lambda d: d.execute_script(epochs_plotted) == 8, "compared curves")
    labels = driver.execute_script(
        "return document.getElementById('curves').charts.loss.series.map(s => s.label)"
    )
    assert labels[1:] == [
        f"{j[:8]} {name}" for j in (job_id, other["id"]) for name in ("train_loss", "val_loss")
    ]
    differing = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#differences th")]
    assert "spec.train.optimizer.lr" in differing
    screenshot(driver, tmp_path, "dashboard-compare")


def test_the_stored_key_is_sent(browser, tmp_path: Path) -> None:
    """Once a key exists the pages say so; the key typed in goes with every call."""
    from selenium.webdriver.common.by import By

    key = secrets.token_urlsafe(24)
    # No worker: this only lists jobs.
    with running("embedded", tmp_path, worker=False, env={"ANNLAB_ADMIN_KEY": key}) as svc:
        browser.get(svc.url + "/ui")
        wait_until(browser, lambda d: "needs an API key" in text(d, "#notice"), "the 401 notice")
        assert text(browser, "#count") == ""
        browser.find_element(By.ID, "key").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait_until(browser, lambda d: "0 jobs" in text(d, "#count"), "the list with the key")
        assert not browser.find_element(By.ID, "notice").is_displayed()


def test_the_api_docs_work_without_a_network(browser, embedded: Service, tmp_path: Path) -> None:
    """Swagger UI and ReDoc render every operation from the server's own files."""
    from selenium.webdriver.common.by import By

    driver = browser
    loaded = "return performance.getEntriesByType('resource').map(e => e.name)"
    driver.get(embedded.url + "/docs")
    wait_until(
        driver,
        lambda d: any(
            "/jobs" in e.text for e in d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        ),
        "Swagger UI's operations",
    )
    paths = {e.text for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/jobs", "/sweeps", "/models/{job_id}/predict"} <= {
        p.replace("\u200b", "") for p in paths
    }
    elsewhere = [u for u in driver.execute_script(loaded) if not u.startswith(embedded.url)]
    assert not elsewhere, elsewhere
    screenshot(driver, tmp_path, "api-docs")

    driver.get(embedded.url + "/redoc")
    wait_until(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, "[data-section-id^='operation/']"),
        "ReDoc's operations",
    )
    sections = driver.find_elements(By.CSS_SELECTOR, "[data-section-id^='operation/']")
    assert len(sections) > 20
    # ReDoc's sidebar asks cdn.redoc.ly for its logo and hides it when that fails; every
    # script, style sheet and fetch is this server's.
    entries = "return performance.getEntriesByType('resource').map(e => [e.name, e.initiatorType])"
    elsewhere = [e for e in driver.execute_script(entries) if not e[0].startswith(embedded.url)]
    assert elsewhere in ([], [["https://cdn.redoc.ly/redoc/logo-mini.svg", "img"]]), elsewhere


def test_a_sweep_is_listed_and_its_page_shows_the_table_and_figures(
    browser, embedded: Service, tmp_path: Path
) -> None:
    import httpx
    from selenium.webdriver.common.by import By

    document = {
        "base": MLP | {"train": {"epochs": 3, "batch_size": 32}},
        "axes": {"model.hidden.0": [8, 16]},
        "zip": [{"train.optimizer.name": ["sgd", "adam"], "train.optimizer.lr": [0.1, 0.01]}],
        "repeats": 2,
    }
    answer = httpx.post(embedded.url + "/sweeps", json=document, timeout=30)
    assert answer.status_code == 202, answer.text
    sweep_id = answer.json()["id"]

    driver = browser
    driver.get(embedded.url + "/ui/sweeps")
    row = f'tr[data-sweep-id="{sweep_id}"]'
    wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the sweep listed")
    driver.find_element(By.CSS_SELECTOR, f"{row} a").click()
    wait_until(driver, lambda d: "/ui/sweeps/" in d.current_url, "the sweep's page")
    wait_until(
        driver,
        lambda d: text(d, "#status") == "succeeded",
        "the sweep to succeed",
        timeout=WAIT * 2,
    )
    cells = "#table tbody tr"
    wait_until(
        driver,
        lambda d: (
            [e.text for e in d.find_elements(By.CSS_SELECTOR, f"{cells} td.n")] == ["2/2"] * 4
        ),
        "the table's four cells, each with n = 2/2",
    )
    accuracy = driver.find_elements(By.CSS_SELECTOR, f'{cells} td[data-figure="test_accuracy"]')
    assert len(accuracy) == 4 and all(" ± " in e.text for e in accuracy)
    loaded = "return document.getElementById(arguments[0]).naturalWidth"
    for figure in ("metric-figure", "curves-figure"):
        wait_until(driver, lambda d, f=figure: d.execute_script(loaded, f) > 0, f"{figure} drawn")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#cells tbody tr")) == 4
    screenshot(driver, tmp_path, "sweep")


def test_pictures_while_a_job_trains_and_curves_on_a_log_scale_smoothed(
    browser, embedded: Service, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    job = embedded.submit(MLP | {"train": {"epochs": 60, "batch_size": 16}})
    driver = browser
    driver.get(f"{embedded.url}/ui/jobs/{job['id']}")
    drawn = 'return document.querySelectorAll("#pictures img").length'
    wait_until(driver, lambda d: d.execute_script(drawn) > 0, "a picture drawn")
    assert embedded.job(job["id"])["status"] == "running"  # drawn while it trains
    wait_until(driver, lambda d: text(d, "#status") == "succeeded", "the job to succeed")

    chart = "document.getElementById('curves').charts.loss"
    assert driver.execute_script(f"return {chart}.scales.y.distr") == 1
    driver.find_element(By.ID, "log-scale").click()
    wait_until(driver, lambda d: d.execute_script(f"return {chart}.scales.y.distr") == 3, "log")
    driver.execute_script(
        "const s = document.getElementById('smoothing'); s.value = '0.9';"
        "s.dispatchEvent(new Event('input'));"
    )
    raw, shown = driver.execute_script(f"return [{chart}.raw[0], {chart}.data[1]]")
    expected, last = [], None
    for value in raw:
        last = value if last is None else 0.9 * last + 0.1 * value
        expected.append(last)
    assert shown == pytest.approx(expected) and shown != pytest.approx(raw)
    screenshot(driver, tmp_path, "dashboard-log-smoothed")


def test_the_job_list_filters_and_searches_and_a_jobs_tags_are_edited(
    browser, embedded: Service, tmp_path: Path
) -> None:
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    tagged = embedded.submit(MLP | {"train": {"epochs": 1}})
    other = embedded.submit(
        {"family": "mlp", "dataset": {"name": "function1d"}, "train": {"epochs": 1}}
    )
    driver = browser
    driver.get(f"{embedded.url}/ui/jobs/{tagged['id']}")
    wait_until(driver, lambda d: text(d, "#status") != "", "the job's page")
    driver.find_element(By.ID, "name").send_keys("baseline digits")
    tags = driver.find_element(By.ID, "tags")
    tags.clear()
    tags.send_keys("figure-2, baseline")
    driver.find_element(By.ID, "note").send_keys("the run for the report")
    driver.find_element(By.ID, "save-labels").click()
    wait_until(driver, lambda d: text(d, "#labels-saved") == "saved", "the tags saved")
    saved = httpx.get(f"{embedded.url}/jobs/{tagged['id']}", timeout=30).json()
    assert (saved["name"], saved["tags"], saved["note"]) == (
        "baseline digits",
        ["figure-2", "baseline"],
        "the run for the report",
    )

    driver.get(embedded.url + "/ui")
    rows = 'return [...document.querySelectorAll("#jobs tbody tr")].map(r => r.dataset.jobId)'
    wait_until(driver, lambda d: other["id"] in d.execute_script(rows), "the list")
    driver.find_element(By.ID, "search").send_keys("FIGURE-2")
    wait_until(driver, lambda d: d.execute_script(rows) == [tagged["id"]], "the search by tag")
    cell = f'tr[data-job-id="{tagged["id"]}"] td.tags span.tag'
    assert [e.text for e in driver.find_elements(By.CSS_SELECTOR, cell)] == ["figure-2", "baseline"]
    driver.find_element(By.ID, "search").clear()
    driver.find_element(By.ID, "dataset").send_keys("function1d")
    on_function1d = [
        job["id"]
        for job in httpx.get(f"{embedded.url}/jobs", params={"limit": 200}, timeout=30).json()[
            "items"
        ]
        if job["spec"]["dataset"]["name"] == "function1d"
    ]
    assert other["id"] in on_function1d and tagged["id"] not in on_function1d
    wait_until(driver, lambda d: d.execute_script(rows) == on_function1d, "the dataset filter")
    Select(driver.find_element(By.ID, "family")).select_by_visible_text("cnn")
    wait_until(driver, lambda d: d.execute_script(rows) == [], "the family filter")
    screenshot(driver, tmp_path, "dashboard-filters")


def test_a_random_search_is_drawn_as_parallel_coordinates(
    browser, embedded: Service, tmp_path: Path
) -> None:
    import httpx
    from selenium.webdriver.common.by import By

    document = {
        "base": MLP | {"train": {"epochs": 2, "batch_size": 32}},
        "random": {
            "n": 4,
            "seed": 1,
            "ranges": {
                "train.optimizer.lr": {"low": 1e-3, "high": 1e-1, "log": True},
                "model.hidden.0": {"low": 4, "high": 32, "integer": True},
            },
        },
    }
    answer = httpx.post(embedded.url + "/sweeps", json=document, timeout=30)
    assert answer.status_code == 202, answer.text
    sweep_id = answer.json()["id"]
    driver = browser
    driver.get(f"{embedded.url}/ui/sweeps/{sweep_id}")
    wait_until(driver, lambda d: text(d, "#status") == "succeeded", "the search to end", WAIT * 2)
    lines = "#parallel polyline"
    wait_until(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, lines)) == 4, "4 lines")
    names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#parallel text.axis-name")]
    assert names == ["train.optimizer.lr (log)", "model.hidden.0", "test_loss (mean)"]
    # Its jobs, from the link to the job list filtered by the sweep.
    driver.find_element(By.ID, "its-jobs").click()
    rows = 'return [...document.querySelectorAll("#jobs tbody tr")].length'
    wait_until(driver, lambda d: d.execute_script(rows) == 4, "the sweep's 4 jobs listed")
    assert driver.find_element(By.ID, "sweep").get_attribute("value") == sweep_id
