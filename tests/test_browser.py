"""The web page in a real browser: headless Chromium, driven by Selenium, against a live server.

Needs the Debian packages ``chromium`` and ``chromium-driver``. Without them the tests fail
with a message saying so (CI must not pass by skipping them), unless MTBIONER_SKIP_BROWSER=1.

Also a script that makes the README's screenshot:
    python tests/test_browser.py MODEL docs/serve.png
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mtbioner.apps.serving import ServeSettings, create_app, running
from mtbioner.runtime.tagging import Tagger

CHROMIUM = Path(os.environ.get("MTBIONER_CHROMIUM", "/usr/bin/chromium"))
DRIVER = Path(os.environ.get("MTBIONER_CHROMEDRIVER", "/usr/bin/chromedriver"))
SENTENCE = "Treatment with sodium chloride reduced MYC binding, and aspirin lowered KRAS levels in mice."
WAIT = 60  # seconds: generous, the CI machine may be busy


def start_chromium(width: int = 1280, height: int = 900):
    """A headless Chromium from the Debian packages (never a downloaded one: there is no network)."""
    if not (CHROMIUM.is_file() and DRIVER.is_file()):
        message = (
            f"headless Chromium is needed for the browser tests: {CHROMIUM} or {DRIVER} is missing "
            "(apt-get install chromium chromium-driver; set MTBIONER_SKIP_BROWSER=1 to skip these tests)"
        )
        if os.environ.get("MTBIONER_SKIP_BROWSER") == "1":
            pytest.skip(message)
        pytest.fail(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(DRIVER)), options=options)


def wait_for(driver, condition, timeout: float = WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def tag_on_page(driver, url: str, text: str) -> list:
    """Open the page, type ``text``, press Tag; return the highlighted <mark> elements."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#legend .chip"))
    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "tag").click()
    wait_for(driver, lambda d: "entit" in d.find_element(By.ID, "status").text)
    return driver.find_elements(By.CSS_SELECTOR, "#output mark.entity")


def mark_text(driver, mark) -> str:
    """The highlighted text of a mark, without its type labels."""
    return driver.execute_script("return arguments[0].firstChild.textContent;", mark)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    driver = start_chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tiny_encoder: Path, toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    from tests.test_serving import toy_model_dir

    tagger = Tagger.load(toy_model_dir(tiny_encoder, toy_dir, tmp_path_factory.getbasetemp()))
    with running(create_app(tagger, ServeSettings(max_bytes=4000))) as url:
        yield url, tagger


def test_page_highlights_entities_with_a_legend(browser, server) -> None:
    from selenium.webdriver.common.by import By

    url, tagger = server
    marks = tag_on_page(browser, url, SENTENCE)
    expected = tagger(SENTENCE)
    assert marks and expected
    shown = {mark_text(browser, m) for m in marks}
    assert {"MYC", "KRAS", "aspirin"} <= shown
    assert shown <= {e["text"] for e in expected}  # every highlight is an entity the API found
    for mark in marks:
        assert mark.value_of_css_property("background-image") != "none" or mark.value_of_css_property(
            "background-color"
        ) not in ("rgba(0, 0, 0, 0)", "transparent")
    chips = {c.get_attribute("data-type"): c for c in browser.find_elements(By.CSS_SELECTOR, "#legend .chip")}
    assert set(chips) == {"CHEM", "Gene"}  # the merged answer's types
    for type_, chip in chips.items():
        count = int(chip.find_element(By.CLASS_NAME, "count").text)
        assert count == sum(e["type"] == type_ for e in expected)
    status = browser.find_element(By.ID, "status").text
    assert status.startswith(f"{len(expected)} entities")
    rows = browser.find_elements(By.CSS_SELECTOR, "#entities tbody tr")
    assert len(rows) == len(expected)


def test_hover_shows_type_corpus_and_score(browser, server) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url, _ = server
    marks = tag_on_page(browser, url, SENTENCE)
    myc = next(m for m in marks if mark_text(browser, m) == "MYC")
    ActionChains(browser).move_to_element(myc).perform()
    tip = browser.find_element(By.ID, "tooltip")
    wait_for(browser, lambda d: tip.is_displayed())
    # the page shows the merged answer by default: BC2GM-style GENE is a Gene
    assert "Gene" in tip.text and "corpus toy_gene" in tip.text and "score 0." in tip.text


def test_legend_filters_by_type(browser, server) -> None:
    from selenium.webdriver.common.by import By

    url, _ = server
    tag_on_page(browser, url, SENTENCE)

    def types_shown() -> set[str]:
        marks = browser.find_elements(By.CSS_SELECTOR, "#output mark.entity")
        return {t for m in marks for t in m.get_attribute("data-types").split()}

    assert types_shown() == {"CHEM", "Gene"}  # the merged answer (GENE -> Gene; CHEM has no merged name)
    chip = browser.find_element(By.CSS_SELECTOR, '#legend .chip[data-type="Gene"]')
    chip.click()
    assert types_shown() == {"CHEM"}
    browser.find_element(By.CSS_SELECTOR, '#legend .chip[data-type="Gene"]').click()
    assert types_shown() == {"CHEM", "Gene"}


def test_errors_are_shown_on_the_page(browser, server) -> None:
    from selenium.webdriver.common.by import By

    url, _ = server
    browser.get(url + "/")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#legend .chip"))
    browser.execute_script("document.getElementById('text').value = 'MYC '.repeat(2000);")
    browser.find_element(By.ID, "tag").click()
    status = browser.find_element(By.ID, "status")
    wait_for(browser, lambda d: "error" in status.text)
    assert "over the limit of 4000 bytes" in status.text


def test_page_and_docs_work_offline(browser, server) -> None:
    from selenium.webdriver.common.by import By

    url, _ = server
    browser.get_log("browser")  # drop what earlier tests logged (the 413 on purpose)
    tag_on_page(browser, url, SENTENCE)
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert resources and all(r.startswith(url) for r in resources), resources
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    browser.get(url + "/docs")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
    assert "MT-BioNER" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    wait_for(browser, lambda d: "/v1/tag" in d.find_element(By.CSS_SELECTOR, ".swagger-ui").text)
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert all(r.startswith(url) for r in resources), resources


def screenshot(model: str, output: str, text: str | None = None, hover: str | None = None) -> None:
    """Serve ``model``, tag the page's example (or ``text``) without overlaps, hover an entity, save a PNG."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = start_chromium(1200, 900)
    try:
        with running(create_app(model)) as url:
            driver.get(url + "/")
            wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#legend .chip"))
            if text is not None:
                driver.execute_script("document.getElementById('text').value = arguments[0];", text)
            driver.find_element(By.ID, "flat").click()
            driver.find_element(By.ID, "tag").click()
            wait_for(driver, lambda d: "entit" in d.find_element(By.ID, "status").text)
            marks = driver.find_elements(By.CSS_SELECTOR, "#output mark.entity")
            target = next((m for m in marks if hover and mark_text(driver, m) == hover), marks[0] if marks else None)
            if target is not None:
                ActionChains(driver).move_to_element(target).perform()
            height = driver.execute_script("return document.documentElement.scrollHeight;")
            clip = {"x": 0, "y": 0, "width": 1200, "height": height, "scale": 1}
            shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            Path(output).write_bytes(base64.b64decode(shot["data"]))
    finally:
        driver.quit()


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4, 5):
        sys.exit("usage: python tests/test_browser.py MODEL OUTPUT.png [TEXT [ENTITY_TO_HOVER]]")
    screenshot(*sys.argv[1:])
