"""The operator console in real headless Chromium (Debian's chromium and chromedriver,
driven by selenium from .venv). tests/console.rs starts an offpath API and workers on
127.0.0.1 and runs this script against them; it talks to the script over stdio:

- the script prints `cure` / `poison` / `outage` / `restore`, and the test answers `ok`
  once the model is cured or poisoned again, or the store's listing fails or works;
- every other line is the script's log.

Screenshots of every view at 390 and 1280 px go to --shots. Exit status 0: all passed.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

WIDTHS = (1280, 390)


def log(*parts):
    print(*parts, flush=True)


def tell(command):
    """Asks the Rust side to change the world; waits for its `ok`."""
    print(command, flush=True)
    answer = sys.stdin.readline().strip()
    assert answer == "ok", f"{command}: the test answered {answer!r}"


class Console:
    def __init__(self, args):
        options = webdriver.ChromeOptions()
        options.binary_location = args.chromium
        # Loopback only: every other host name resolves to nothing, and the browser's
        # own background traffic (updates, sync, pings) is off.
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking", "--disable-extensions",
                    "--disable-sync", "--disable-component-update", "--disable-default-apps",
                    "--disable-domain-reliability", "--no-pings",
                    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                    "--window-size=1280,900"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(30)
        self.url = args.url
        self.shots = Path(args.shots)
        self.shots.mkdir(parents=True, exist_ok=True)

    def quit(self):
        self.driver.quit()

    def wait(self, what, condition, timeout=60):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(
                lambda d: condition())
        except TimeoutException:
            self.shoot_failure(what)
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css):
        """The first match's text ("" if none), read again if the console re-renders
        the element between finding and reading it."""
        for _ in range(10):
            found = self.find_all(css)
            try:
                return found[0].text if found else ""
            except StaleElementReferenceException:
                continue
        raise AssertionError(f"{css} kept being re-rendered")

    def go(self, fragment):
        self.driver.execute_script("location.hash = arguments[0]", fragment)

    def sign_in(self, key, owner):
        self.driver.get(self.url + "/console")
        self.wait("the page", lambda: self.text("#identity") not in ("", "…"))
        if not self.find("#key-form").is_displayed():
            self.find("#key-button").click()
        field = self.find("#key-input")
        field.send_keys(key)
        field.send_keys(Keys.ENTER)
        self.wait(f"signed in as {owner}", lambda: self.text("#identity").startswith(owner))
        log(f"signed in as {self.text('#identity')}")

    def unlabelled(self):
        """Visible controls without a label (for=, wrapping label, aria-label or text)."""
        return self.driver.execute_script("""
            return [...document.querySelectorAll("input, select, textarea, button")]
              .filter((el) => el.offsetParent !== null)
              .filter((el) => {
                if (el.getAttribute("aria-label")) return false;
                if (el.tagName === "BUTTON") return !el.textContent.trim();
                if (el.id && document.querySelector(`label[for="${el.id}"]`)) return false;
                return !el.closest("label");
              })
              .map((el) => el.outerHTML.slice(0, 100));
        """)

    def shoot(self, name):
        """Full-page screenshots of the current view at both widths, once every control
        there is labelled."""
        unlabelled = self.unlabelled()
        assert not unlabelled, f"{name}: unlabelled controls {unlabelled}"
        for width in WIDTHS:
            self.driver.set_window_size(width, 900)
            time.sleep(0.3)
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(width, min(max(height + 140, 700), 3000))
            time.sleep(0.3)
            path = self.shots / f"{name}-{width}.png"
            self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1280, 900)
        log(f"screenshots: {name}")

    def shoot_failure(self, what):
        path = self.shots / ("failure-" + "".join(c if c.isalnum() else "-" for c in what)[:60] + ".png")
        try:
            self.driver.save_screenshot(str(path))
            log(f"failure screenshot: {path}")
            for entry in self.driver.get_log("browser"):
                log("browser:", entry.get("message"))
        except Exception as err:  # the browser may be gone
            log(f"no failure screenshot: {err}")

    def submit(self, task, **fields):
        """Submits a job from the Try it form; returns its id."""
        self.go("#/try")
        self.wait("the form", lambda: self.find_all("#try-task"))
        Select(self.find("#try-task")).select_by_value(task)
        for field, value in fields.items():
            element = self.find(f"#try-{field}")
            element.clear()
            element.send_keys(value)
        previous = self.text("#try-job")
        self.find("#try-submit").click()
        def submitted():
            job = self.text("#try-job")
            return job if job not in ("", previous) else None

        return self.wait("the submitted job", submitted)

    def tab_to(self, what, matches, limit=40):
        """Presses Tab until the focused element matches; returns it."""
        for _ in range(limit):
            active = self.driver.switch_to.active_element
            if matches(active):
                return active
            active.send_keys(Keys.TAB)
        self.shoot_failure(what)
        raise AssertionError(f"Tab never reached {what}")

    def try_status(self):
        return self.text("#try-status")

    def fetch_status(self, path, key, method="GET", body=None):
        """The status of an API call made from the page, as the console makes them."""
        return self.driver.execute_async_script(
            """
            const [path, key, method, body, done] = arguments;
            const headers = {Authorization: "Bearer " + key};
            if (body !== null) headers["Content-Type"] = "application/json";
            fetch(path, {method, headers, body: body === null ? undefined : body})
              .then((r) => done(r.status), (e) => done(String(e)));
            """, path, key, method, body)


def job_rows(console):
    """(id, status, task) of each row of the job list, read in one script: the list
    re-renders every 3 s, so elements found first and read after could be gone."""
    return [tuple(row) for row in console.driver.execute_script("""
        return [...document.querySelectorAll("tbody tr[data-job]")].map((row) => [
          row.dataset.job,
          row.querySelector(".chip").innerText,
          row.querySelectorAll("td")[1].innerText,
        ]);
    """)]


def wait_for_letter(console, job):
    last = [time.monotonic()]

    def present():
        rows = console.find_all(f'tr[data-job="{job}"]')
        if not rows and time.monotonic() - last[0] > 2:
            last[0] = time.monotonic()
            console.find("#dlq-refresh").click()
        return rows
    console.go("#/dead-letters")
    console.wait(f"job {job} in the dead-letter view", present, timeout=90)
    return console.find(f'tr[data-job="{job}"]')


def confirm(console, accept):
    console.wait("the confirmation dialog", lambda: console.find("#confirm").is_displayed())
    focused = console.driver.switch_to.active_element.get_attribute("id")
    assert focused == "confirm-cancel", f"the dialog focuses Cancel first, not {focused!r}"
    if accept:
        console.find("#confirm-ok").click()
    else:
        console.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    console.wait("the dialog to close", lambda: not console.find("#confirm").is_displayed())


def operator_session(console, args):
    console.sign_in(args.operator_key, "ops")
    assert "operator" in console.text("#identity")
    for link in ("Jobs", "Queues", "Dead letters", "Try it"):
        assert any(a.text == link and a.is_displayed() for a in console.find_all("#nav a")), link

    # Submit from the form; the result arrives by long-poll.
    hello = console.submit("embed", texts="hello console")
    console.wait("the embed job to succeed", lambda: console.try_status() == "succeeded")
    assert "vector(s)" in console.text("#try-result"), console.text("#try-result")
    log(f"submitted {hello} from the form: succeeded")
    classified = console.submit("classify", text="The parcel came broken", labels="complaint, praise")
    console.wait("the classify job to succeed", lambda: console.try_status() == "succeeded")
    console.shoot("try")
    document = console.submit("embed_document", document="offpath keeps heavy work off the request path. " * 60)
    console.wait("the document job to succeed", lambda: console.try_status() == "succeeded", timeout=90)
    console.find("#try-job").click()
    console.wait("the document's page", lambda: console.text("#job-id") == document)
    progress = console.find("#job-progress")
    done, total = int(progress.get_attribute("value")), int(progress.get_attribute("max"))
    assert done == total >= 2, f"progress {done}/{total}"
    log(f"document {document}: {done} of {total} chunks")
    console.shoot("document")

    # A poisoned job: every attempt crashes, it is dead-lettered, its error is listed.
    poisoned = console.submit("embed", texts="poison pill")
    console.wait("the poisoned job to fail", lambda: console.try_status() == "failed", timeout=90)
    row = wait_for_letter(console, poisoned)
    assert "dead_lettered" in row.find_element(By.CSS_SELECTOR, ".letter-error").text, row.text
    log(f"{poisoned} is in the dead-letter view: {row.find_element(By.CSS_SELECTOR, '.letter-error').text}")
    console.shoot("dead-letters")

    # Fix the cause, redrive that one job (confirmed), and it succeeds.
    tell("cure")
    console.find(f'tr[data-job="{poisoned}"] button[aria-label^="Redrive"]').click()
    confirm(console, accept=True)
    console.wait("the redrive's report", lambda: "Redrove 1 message(s)" in console.text("#banner"))
    console.go("#/jobs/" + poisoned)
    console.wait("the redriven job to succeed", lambda: console.text("#job-status") == "succeeded", timeout=90)
    attempts = int(console.text("#job-attempts"))
    assert attempts >= 4, f"the redriven job ran {attempts} times"
    log(f"{poisoned} redriven: succeeded after {attempts} attempts")
    console.shoot("job")

    # Purge asks first: cancelled, the letter stays; confirmed, the queue empties.
    tell("poison")
    purged = console.submit("embed", texts="poison again")
    console.wait("the second poisoned job to fail", lambda: console.try_status() == "failed", timeout=90)
    wait_for_letter(console, purged)
    console.find("#purge").click()
    confirm(console, accept=False)
    assert console.find_all(f'tr[data-job="{purged}"]'), "a cancelled purge keeps the letter"
    console.find("#purge").click()
    confirm(console, accept=True)
    console.wait("the purge", lambda: "Purged" in console.text("#banner"))
    console.wait("an empty dead-letter view", lambda: "empty" in console.text("tbody"))
    log("purge: cancelled once (letter kept), then confirmed (queue empty)")

    # A job the model refuses fails for good (no dead letter).
    rejected = console.submit("embed", texts="reject this")
    console.wait("the rejected job to fail", lambda: console.try_status() == "failed", timeout=60)

    # Filters: by status and by task, through the listing API.
    console.go("#/jobs")
    console.wait("the job list", lambda: len(job_rows(console)) >= 5)
    Select(console.find("#filter-status")).select_by_value("failed")
    console.wait("failed jobs only", lambda: job_rows(console) and all(s == "failed" for _, s, _ in job_rows(console)))
    failed = {job for job, _, _ in job_rows(console)}
    assert {rejected, purged} <= failed, (failed, rejected, purged)
    assert poisoned not in failed
    Select(console.find("#filter-status")).select_by_value("")
    Select(console.find("#filter-task")).select_by_value("classify")
    console.wait("classify jobs only", lambda: job_rows(console) and all(t == "classify" for _, _, t in job_rows(console)))
    assert [job for job, _, _ in job_rows(console)] == [classified]
    Select(console.find("#filter-task")).select_by_value("")
    console.wait("every job again", lambda: len(job_rows(console)) >= 5)
    log(f"filters: {len(failed)} failed, 1 classify")
    search = console.find("#job-search")
    search.send_keys(hello)
    search.send_keys(Keys.ENTER)
    console.wait("the searched job", lambda: console.text("#job-id") == hello)
    console.go("#/jobs")
    console.wait("the job list", lambda: len(job_rows(console)) >= 5)
    console.shoot("jobs")

    # Queues: every queue's figures and the minutes' charts.
    console.go("#/queues")
    console.wait("the queue cards", lambda: len(console.find_all("[data-queue]")) == 4)
    names = [card.get_attribute("data-queue") for card in console.find_all("[data-queue]")]
    assert names == ["jobs", "jobs_dlq", "webhooks", "webhooks_dlq"], names
    charts = console.find_all("svg.chart")
    assert len(charts) == 2
    finished = charts[0].get_attribute("aria-label")
    succeeded = int(finished.split("succeeded: ")[1].split(" ")[0])
    assert succeeded >= 3, finished
    log(f"queues: {finished}")
    console.shoot("queues")

    # A backend outage is shown as the API's 503, not a blank page.
    tell("outage")
    console.go("#/jobs")
    console.wait("the 503 banner", lambda: "503 service_unavailable" in console.text("#banner"))
    assert console.find("h1").text == "Jobs"
    log(f"outage: {console.text('#banner')}")
    console.shoot("unavailable")
    tell("restore")
    console.find("#view button.ghost").click()  # Refresh
    console.wait("the banner to clear", lambda: not console.find("#banner").is_displayed())


def user_session(console, args):
    console.sign_in(args.user_key, "alice")
    assert "operator" not in console.text("#identity")
    visible = [a.text for a in console.find_all("#nav a") if a.is_displayed()]
    assert visible == ["Jobs", "Try it"], visible

    # By keyboard alone: Tab to Try it, Enter, Tab to the form's button, Enter.
    console.driver.find_element(By.TAG_NAME, "body").click()
    console.tab_to("the Try it link", lambda el: el.text == "Try it").send_keys(Keys.ENTER)
    console.wait("the form", lambda: console.find_all("#try-submit"))
    console.tab_to("the submit button", lambda el: el.get_attribute("id") == "try-submit").send_keys(Keys.ENTER)
    console.wait("alice's job to succeed", lambda: console.try_status() == "succeeded")
    log(f"keyboard only: submitted {console.text('#try-job')}, succeeded")
    console.go("#/dead-letters")
    console.wait("the operators-only notice", lambda: console.find_all("#operators-only"))
    for action in ("#redrive-all", "#redrive-selected", "#purge"):
        assert not console.find_all(action), f"a non-operator sees {action}"
    for path, method, body in (("/admin/queues", "GET", None), ("/admin/dead-letters", "GET", None),
                               ("/admin/dead-letters/redrive", "POST", json.dumps({"all": True})),
                               ("/admin/dead-letters/purge", "POST", json.dumps({"confirm": "purge"}))):
        status = console.fetch_status(path, args.user_key, method, body)
        assert status == 403, f"{method} {path} answered {status} to a non-operator"
    log("non-operator: no operator views or actions; every admin route answers 403")
    console.shoot("operators-only")
    console.go("#/jobs")
    console.wait("alice's list: her one job", lambda: len(job_rows(console)) == 1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--operator-key", required=True)
    parser.add_argument("--user-key", required=True)
    parser.add_argument("--shots", required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()
    console = Console(args)
    try:
        user_session(console, args)
        operator_session(console, args)
    finally:
        console.quit()
    log("all checks passed")


if __name__ == "__main__":
    main()
