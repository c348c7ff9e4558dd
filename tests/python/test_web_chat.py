"""The web chat page in headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium): pick an image, ask, watch the answer
stream in, ask a follow-up about the same image. Saves a screenshot to
build/test-artifacts/web-chat.png."""

import os

import pytest

from server_harness import BUILD_DIR, metric, png_bytes, scrape_metrics, start_server, stop_server

SCREENSHOT = os.path.join(BUILD_DIR, "test-artifacts", "web-chat.png")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    # The machine has no network: keep Chromium from trying to reach out.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1000,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server():
    running = start_server("--http.enabled", "true", "--http.port", "0")
    yield running
    assert stop_server(running) == 0, "".join(running.log)


def test_ask_and_follow_up_in_the_browser(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    image = tmp_path / "shape.png"
    image.write_bytes(png_bytes(color=(30, 60, 220)))
    browser.get(f"http://{server.http_address}/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "model").text)  # /v1/models answered
    browser.find_element(By.ID, "image").send_keys(str(image))
    wait.until(lambda d: d.find_element(By.ID, "preview").is_displayed())

    for turn, question in enumerate(["what is in the picture?", "what color is it?"]):
        browser.find_element(By.ID, "question").send_keys(question)
        browser.find_element(By.ID, "send").click()
        answer_id = f"answer-{2 * turn + 1}"
        wait.until(lambda d: d.find_elements(By.ID, answer_id) and
                   d.find_element(By.ID, answer_id).text)
        stats = wait.until(lambda d: d.find_elements(By.ID, f"stats-{2 * turn + 1}"))
        assert "first token after" in stats[0].text and "tokens" in stats[0].text
        assert "Error" not in browser.find_element(By.ID, answer_id).text
    log = browser.find_element(By.ID, "log").text
    assert "You: what is in the picture?" in log and "You: what color is it?" in log
    # The follow-up reused the first turn's vision-encoder output: one run.
    samples = scrape_metrics(server)
    assert metric(samples, "iblip_cache_misses_total", cache="vision") == 1
    assert metric(samples, "iblip_cache_hits_total", cache="vision") == 1
    assert metric(samples, "iblip_requests_total", code="ok") == 2
    os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
    assert browser.save_screenshot(SCREENSHOT)
    assert os.path.getsize(SCREENSHOT) > 1000
