"""The web chat page in headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium), as a new user would use it: pick an
image, ask, watch the answer stream in, ask a follow-up; New chat, a new
image and Stop while an answer streams; two quick sends; the server killed
mid-answer; a phone-sized window; the image sent once and then by
reference; whether earlier turns are sent, chosen per conversation or fixed
by the server; an axe-core accessibility check. Saves desktop and phone
screenshots to build/test-artifacts/."""

import base64
import hashlib
import json
import os

import pytest

from gated_proxy import GatedProxy
from server_harness import (BUILD_DIR, REPO_DIR, metric, png_bytes, scrape_metrics, start_server,
                            stop_server, wait_until)

ARTIFACTS = os.path.join(BUILD_DIR, "test-artifacts")
AXE = os.path.join(REPO_DIR, "tests", "web", "node_modules", "axe-core", "axe.min.js")

# Records every chat request body the page sends (window.__sent), so tests
# can see what went over the wire.
RECORD_REQUESTS = """
if (!window.__sent) {
  window.__sent = [];
  const original = window.fetch;
  window.fetch = (url, options) => {
    if (String(url).includes("/v1/chat/completions")) window.__sent.push(JSON.parse(options.body));
    return original(url, options);
  };
}
"""


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


@pytest.fixture()
def proxy(server):
    relay = GatedProxy(server.http_address)
    yield relay
    relay.close()


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "shape.png"
    path.write_bytes(png_bytes(color=(30, 60, 220)))
    return path


def by_id(driver, element_id):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.ID, element_id)


def wait_for(driver, condition, what, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.02).until(
        lambda d: condition(d), message=f"waiting for {what}")


def open_page(driver, address, image_path=None):
    driver.get(f"http://{address}/")
    wait_for(driver, lambda d: by_id(d, "model").text, "/v1/models")
    driver.execute_script(RECORD_REQUESTS)
    if image_path is not None:
        pick_image(driver, image_path)


def pick_image(driver, image_path):
    by_id(driver, "image").send_keys(str(image_path))
    wait_for(driver, lambda d: by_id(d, "preview").is_displayed(), "the preview")


def send_question(driver, text):
    by_id(driver, "question").send_keys(text)
    by_id(driver, "send").click()


def finished_answer(driver, number):
    """The text of answer `number` (1, 3, 5, ...) once its stats are shown."""
    wait_for(driver, lambda d: d.find_elements("id", f"stats-{number}"), f"answer {number}")
    return by_id(driver, f"answer-{number}").text


def text_content(driver, element_id):
    """The exact text (Selenium's .text normalizes whitespace)."""
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def sent(driver):
    return driver.execute_script("return window.__sent")


def test_ask_and_follow_up_send_the_image_once(browser, server, image):
    open_page(browser, server.http_address, image)
    before = scrape_metrics(server)
    for turn, question in enumerate(["what is in the picture?", "what color is it?"]):
        send_question(browser, question)
        number = 2 * turn + 1
        finished_answer(browser, number)
        stats = by_id(browser, f"stats-{number}").text
        assert "first token after" in stats and "tokens" in stats, stats
        assert "Error" not in by_id(browser, f"answer-{number}").text
        assert by_id(browser, "send").text == "Send"
    log = by_id(browser, "log").text
    assert "You: what is in the picture?" in log and "You: what color is it?" in log
    # The first request carries the bytes; the follow-up names them by hash
    # and carries no image bytes at all.
    first, second = sent(browser)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    first_url = first["messages"][0]["content"][0]["image_url"]["url"]
    assert base64.b64decode(first_url.split(",", 1)[1]) == image.read_bytes()
    assert second["messages"][0]["content"][0]["image_url"]["url"] == f"iblip:sha256:{digest}"
    assert "data:" not in json.dumps(second)
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    # The follow-up reused the first turn's vision-encoder output: one run.
    samples = scrape_metrics(server)
    delta = lambda name, **labels: (metric(samples, name, **labels)  # noqa: E731
                                    - metric(before, name, **labels))
    assert delta("iblip_cache_misses_total", cache="vision") == 1
    assert delta("iblip_cache_hits_total", cache="vision") == 1
    assert delta("iblip_requests_total", code="ok") == 2
    os.makedirs(ARTIFACTS, exist_ok=True)
    assert browser.save_screenshot(os.path.join(ARTIFACTS, "web-chat.png"))


def test_statistics_come_from_the_server_and_say_when_cut_at_the_limit(browser, server, image):
    open_page(browser, server.http_address, image)
    browser.find_element("css selector", "#settings summary").click()
    max_tokens = by_id(browser, "max-tokens")
    max_tokens.clear()
    max_tokens.send_keys("3")
    # min_tokens (not a page control) makes the tiny model use all three.
    browser.execute_script("""
      const original = window.fetch;
      window.fetch = (url, options) => {
        const body = JSON.parse(options.body);
        body.min_tokens = 3;
        return original(url, {...options, body: JSON.stringify(body)});
      };""")
    send_question(browser, "describe it")
    finished_answer(browser, 1)
    stats = by_id(browser, "stats-1").text
    assert "3 tokens" in stats and "tok/s" in stats, stats
    assert "Stopped at the 3-token limit" in stats, stats
    assert sent(browser)[0]["max_tokens"] == 3


def test_new_chat_during_an_answer_cancels_it(browser, server, proxy, image):
    open_page(browser, proxy.address, image)
    proxy.arm()
    send_question(browser, "what is in the picture?")
    wait_for(browser, lambda d: by_id(d, "answer-1").text, "the first words")
    assert by_id(browser, "send").text == "Stop"
    by_id(browser, "reset").click()
    proxy.release()
    assert by_id(browser, "log").text == ""
    assert by_id(browser, "send").text == "Send"
    # The next question goes out with the image, in a fresh history, and
    # the old answer never lands in the new conversation.
    send_question(browser, "what color is it?")
    finished_answer(browser, 1)
    requests = sent(browser)
    assert len(requests) == 2
    assert [m["role"] for m in requests[1]["messages"]] == ["user"]
    assert requests[1]["messages"][0]["content"][0]["type"] == "image_url"
    log = by_id(browser, "log").text
    assert "what is in the picture?" not in log and "You: what color is it?" in log
    assert "Interrupted" not in log


def test_a_new_image_during_an_answer_cancels_it(browser, server, proxy, image, tmp_path):
    open_page(browser, proxy.address, image)
    proxy.arm()
    send_question(browser, "what is in the picture?")
    wait_for(browser, lambda d: by_id(d, "answer-1").text, "the first words")
    other = tmp_path / "other.png"
    other.write_bytes(png_bytes(color=(10, 200, 10)))
    pick_image(browser, other)
    wait_for(browser, lambda d: by_id(d, "send").text == "Send", "the request to end")
    proxy.release()
    assert by_id(browser, "log").text == ""
    send_question(browser, "what color is it?")
    finished_answer(browser, 1)
    url = sent(browser)[1]["messages"][0]["content"][0]["image_url"]["url"]
    assert base64.b64decode(url.split(",", 1)[1]) == other.read_bytes()


def test_stop_keeps_the_partial_answer_out_of_the_history(browser, server, proxy, image):
    open_page(browser, proxy.address, image)
    proxy.arm()
    send_question(browser, "what is in the picture?")
    wait_for(browser, lambda d: by_id(d, "answer-1").text, "the first words")
    partial = by_id(browser, "answer-1").text
    by_id(browser, "send").click()  # Stop
    proxy.release()
    note = wait_for(browser, lambda d: d.find_elements("id", "interrupted-1"), "the note")[0]
    assert "Interrupted (stopped)" in note.text
    assert by_id(browser, "answer-1").text == partial
    assert by_id(browser, "send").text == "Send"
    assert browser.find_elements("css selector", "button.retry")
    # The stopped turn is not history: the next request asks one question.
    send_question(browser, "what color is it?")
    finished_answer(browser, 1)
    assert [m["role"] for m in sent(browser)[-1]["messages"]] == ["user"]


def test_two_quick_sends_run_one_request_at_a_time(browser, server, proxy, image):
    from selenium.webdriver.common.keys import Keys
    open_page(browser, proxy.address, image)
    proxy.arm()
    question = by_id(browser, "question")
    question.send_keys("what is in the picture?" + Keys.ENTER)
    wait_for(browser, lambda d: by_id(d, "answer-1").text, "the first words")
    question.send_keys("what color is it?" + Keys.ENTER)  # while answering
    assert len(sent(browser)) == 1
    assert question.get_attribute("value") == "what color is it?"
    proxy.release()
    finished_answer(browser, 1)
    question.send_keys(Keys.ENTER)  # the waiting question goes now
    finished_answer(browser, 3)
    requests = sent(browser)
    assert len(requests) == 2
    messages = requests[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"][1]["text"] == "what is in the picture?"
    assert messages[1]["content"] == text_content(browser, "answer-1")
    assert messages[2]["content"] == "what color is it?"


def test_a_server_killed_mid_answer_keeps_the_text_and_offers_a_retry(browser, image):
    killed = start_server("--http.enabled", "true", "--http.port", "0")
    relay = GatedProxy(killed.http_address)
    try:
        open_page(browser, relay.address, image)
        relay.arm()
        send_question(browser, "what is in the picture?")
        wait_for(browser, lambda d: by_id(d, "answer-1").text, "the first words")
        partial = by_id(browser, "answer-1").text
        killed.process.kill()
        killed.process.wait()
        relay.sever()  # the connection dies with the server
        note = wait_for(browser, lambda d: d.find_elements("id", "interrupted-1"), "the note")[0]
        assert "connection lost" in note.text
        assert by_id(browser, "answer-1").text == partial
        assert "network error" not in by_id(browser, "answer-1").text
        assert by_id(browser, "question").get_attribute("value") == "what is in the picture?"
        assert browser.find_elements("css selector", "button.retry")
        assert by_id(browser, "send").text == "Send"
    finally:
        relay.close()
        if killed.process.poll() is None:
            stop_server(killed)


def test_an_evicted_image_is_sent_again(browser, image):
    """With no feature cache the server holds no image: the reference gets
    404 naming the hash, and the page sends the bytes again."""
    uncached = start_server("--http.enabled", "true", "--http.port", "0",
                            "--cache.vision-cache-mib", "0", "--cache.qformer-cache-mib", "0")
    try:
        open_page(browser, uncached.http_address, image)
        send_question(browser, "what is in the picture?")
        finished_answer(browser, 1)
        send_question(browser, "what color is it?")
        finished_answer(browser, 3)
        urls = [r["messages"][0]["content"][0]["image_url"]["url"] for r in sent(browser)]
        assert len(urls) == 3
        assert urls[0].startswith("data:") and urls[2] == urls[0]
        assert urls[1] == "iblip:sha256:" + hashlib.sha256(image.read_bytes()).hexdigest()
        samples = scrape_metrics(uncached)
        assert metric(samples, "iblip_requests_total", code="not_found") == 1
        assert metric(samples, "iblip_requests_total", code="ok") == 2
    finally:
        assert stop_server(uncached) == 0, "".join(uncached.log)


def test_a_file_that_is_not_an_image_is_refused_when_picked(browser, server, tmp_path):
    open_page(browser, server.http_address)
    document = tmp_path / "notes.png"  # the name says image, the bytes do not
    document.write_bytes(b"%PDF-1.4 not an image at all")
    by_id(browser, "image").send_keys(str(document))
    error = wait_for(browser, lambda d: d.find_elements("css selector", "#log .error"), "the error")
    assert '"notes.png" is not an image this page can read' in error[0].text
    assert not by_id(browser, "preview").is_displayed()
    send_question(browser, "what is it?")
    assert "Choose an image first." in by_id(browser, "log").text
    assert sent(browser) == []


def phone(driver, width, height):
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})


@pytest.mark.parametrize("width,height", [(390, 844), (360, 640)])
def test_phone_layout_fits_and_follows_the_newest_answer(browser, server, image, width, height):
    phone(browser, width, height)
    try:
        open_page(browser, server.http_address, image)
        scrolls = "const l = document.getElementById('log'); return l.scrollHeight > l.clientHeight"
        for turn in range(12):  # until the conversation is taller than its box
            send_question(browser, f"question {turn}: what is in the picture?")
            finished_answer(browser, 2 * turn + 1)
            if browser.execute_script(scrolls):
                break
        layout = browser.execute_script("""
          const width = document.documentElement.clientWidth;
          const wide = Array.from(document.querySelectorAll("body *"))
            .filter((e) => e.getBoundingClientRect().right > width + 0.5)
            .map((e) => e.id || e.tagName);
          const inView = (id) => {
            const r = document.getElementById(id).getBoundingClientRect();
            return r.top >= 0 && r.bottom <= window.innerHeight && r.right <= width;
          };
          const log = document.getElementById("log");
          return {width, scrollWidth: document.documentElement.scrollWidth, wide,
                  reset: inView("reset"), question: inView("question"), send: inView("send"),
                  history: inView("history"),
                  atBottom: log.scrollTop + log.clientHeight >= log.scrollHeight - 2,
                  scrolls: log.scrollHeight > log.clientHeight};""")
        assert layout["width"] == width
        assert layout["scrollWidth"] <= width, layout
        assert layout["wide"] == [], layout
        assert layout["reset"] and layout["question"] and layout["send"], layout
        assert layout["history"], layout
        assert layout["scrolls"] and layout["atBottom"], layout
        if width == 390:
            assert browser.save_screenshot(os.path.join(ARTIFACTS, "web-chat-phone.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def history_choice(driver):
    from selenium.webdriver.support.ui import Select
    return Select(by_id(driver, "history"))


def test_the_page_says_whether_earlier_turns_are_sent_and_sends_the_choice(browser, server,
                                                                            image):
    open_page(browser, server.http_address, image)
    wait_for(browser, lambda d: by_id(d, "context").is_displayed(), "the history setting")
    context = by_id(browser, "context").text
    assert "Earlier questions and answers:" in context
    assert not by_id(browser, "history-fixed").is_displayed()
    choice = history_choice(browser)
    assert choice.first_selected_option.get_attribute("value") == "latest"  # the server's
    assert choice.first_selected_option.text == "not sent (server default)"
    assert 'ask "what color is the car?", not "what color is it?"' in context
    send_question(browser, "what is on the table?")
    finished_answer(browser, 1)
    # Switched mid-conversation: the next question carries the earlier turn.
    choice.select_by_value("transcript")
    note = by_id(browser, "history-note").text
    assert 'Follow-ups such as "what color is it?" can refer to earlier answers' in note
    send_question(browser, "what color is it?")
    finished_answer(browser, 3)
    first, second = sent(browser)
    assert first["history"] == "latest" and second["history"] == "transcript"
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    # New chat starts from the server's default again.
    by_id(browser, "reset").click()
    assert choice.first_selected_option.get_attribute("value") == "latest"
    assert "stands alone" in by_id(browser, "history-note").text
    send_question(browser, "what color is it?")
    finished_answer(browser, 1)
    assert sent(browser)[2]["history"] == "latest"


def test_the_history_control_works_from_the_keyboard(browser, server, image):
    from selenium.webdriver.common.keys import Keys
    open_page(browser, server.http_address, image)
    wait_for(browser, lambda d: by_id(d, "context").is_displayed(), "the history setting")
    # Tab reaches the control; arrow keys change it without a mouse.
    reached = []
    for _ in range(12):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        reached.append(browser.switch_to.active_element.get_attribute("id"))
        if reached[-1] == "history":
            break
    assert reached[-1] == "history", reached
    browser.switch_to.active_element.send_keys(Keys.ARROW_UP)
    assert history_choice(browser).first_selected_option.get_attribute("value") == "transcript"
    assert "can refer to earlier answers" in by_id(browser, "history-note").text
    # The change is announced (the note is not a live region itself).
    announced = browser.execute_script("return document.getElementById('announcer').textContent")
    assert "can refer to earlier answers" in announced


def test_a_server_that_fixes_the_history_is_shown_and_sent_nothing(browser, image):
    fixed = start_server("--http.enabled", "true", "--http.port", "0",
                         "--http.history", "transcript", "--http.history-selectable", "false")
    try:
        open_page(browser, fixed.http_address, image)
        wait_for(browser, lambda d: by_id(d, "context").is_displayed(), "the history setting")
        assert not by_id(browser, "history").is_displayed()
        statement = " ".join(by_id(browser, "context").text.split())
        assert statement.startswith(
            "Earlier questions and answers: sent with each question (this server's setting)."
        ), statement
        assert "can refer to earlier answers" in by_id(browser, "history-note").text
        send_question(browser, "what is on the table?")
        finished_answer(browser, 1)
        send_question(browser, "what color is it?")
        finished_answer(browser, 3)
        requests = sent(browser)
        assert len(requests) == 2 and all("history" not in r for r in requests), requests
        assert axe_violations(browser) == []
    finally:
        assert stop_server(fixed) == 0, "".join(fixed.log)


def axe_violations(driver):
    """axe-core's critical and serious findings on the page as it is."""
    if not os.path.exists(AXE):
        pytest.fail(f"{AXE} is missing: run scripts/setup (npm ci in tests/web)")
    with open(AXE, encoding="utf-8") as f:
        driver.execute_script(f.read())
    result = driver.execute_async_script("""
      const done = arguments[arguments.length - 1];
      axe.run(document, {resultTypes: ["violations"]}).then(
        (r) => done(r.violations.map((v) => ({id: v.id, impact: v.impact,
                                              nodes: v.nodes.map((n) => n.target)}))),
        (e) => done(String(e)));""")
    assert isinstance(result, list), result
    return [v for v in result if v["impact"] in ("critical", "serious")]


def test_axe_finds_no_critical_or_serious_violations(browser, server, image):
    open_page(browser, server.http_address, image)
    send_question(browser, "what is in the picture?")
    finished_answer(browser, 1)
    browser.find_element("css selector", "#settings summary").click()
    # The history choice is on screen, so axe checks it too.
    assert by_id(browser, "history").is_displayed()
    assert axe_violations(browser) == []
    # Answers are announced once, when complete, not word by word.
    assert by_id(browser, "log").get_attribute("aria-live") == "off"
    announced = browser.execute_script("return document.getElementById('announcer').textContent")
    assert announced == "Answer: " + text_content(browser, "answer-1")
