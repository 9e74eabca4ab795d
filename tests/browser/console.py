"""Drives the sshq web console in headless Chromium (Debian's, through Playwright), against a
running stack that tests/it/console.rs started. Every step asserts what a person would see:

- a wrong API key shows the API's error; the right one signs in and shows the tenant;
- the device list shows the devices with their presence and tags, and filters by tag;
- a command's output appears live (its first line while the job is still running), then its end;
- a command on a tag runs as a batch whose progress reaches success, with each target's output;
- a session recording plays in asciinema-player (text appears over time, not all at once);
- an interactive shell over the WebSocket runs what is typed, and reports its close;
- an administrator closes another live shell from its session page, and the shell says so;
- device names show in the job and session lists for a device past the first 100;
- a batch's skipped targets are all listed, page after page;
- an observer key sees why it may not run commands, open shells or close a live shell, and no
  Run action;
- signing out forgets the key; nothing went to localStorage or cookies; the page raised no
  Content-Security-Policy violation and no uncaught error.

Configuration comes from the environment (see console.rs). Screenshots go to SCREENSHOTS.
Exits non-zero, with the reason, at the first failed expectation.
"""

import os
import re
import sys
import time

from playwright.sync_api import expect, sync_playwright

BASE = os.environ["CONSOLE_URL"]
KEY = os.environ["API_KEY"]
DEVICE_ID = os.environ["DEVICE_ID"]
DEVICE_NAME = os.environ["DEVICE_NAME"]
OTHER_NAME = os.environ["OTHER_DEVICE_NAME"]
ONLY_TAG = os.environ["ONLY_TAG"]  # only DEVICE has it
FLEET_TAG = os.environ["FLEET_TAG"]  # every device has it
FLEET_SIZE = int(os.environ["FLEET_SIZE"])
RECORDING = os.environ["RECORDING_SESSION"]  # a job printing tick1..tick6 over ~3 s
JOBS_BEFORE = int(os.environ["JOBS_BEFORE"])  # jobs of the tenant before this script
LATE_ID = os.environ["LATE_DEVICE_ID"]  # sorts after 100 other devices by name
LATE_NAME = os.environ["LATE_DEVICE_NAME"]
LATE_JOB = os.environ["LATE_JOB"]  # a job on LATE
CROWD_TAG = os.environ["CROWD_TAG"]  # LATE and CROWD_SKIPPED pending devices
CROWD_SKIPPED = int(os.environ["CROWD_SKIPPED"])
FILLER_SUFFIX = os.environ["FILLER_SUFFIX"]  # the pending ones are y-filler-NNN{suffix}
OBSERVER_KEY = os.environ["OBSERVER_KEY"]
SHOTS = os.environ["SCREENSHOTS"]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

expect.set_options(timeout=20_000)


def step(text):
    print(f"console.py: {text}", flush=True)


def shot(page, name):
    os.makedirs(SHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=False)


def main():
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # Root in a container: Chromium's sandbox needs user namespaces we may not have.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        # Collected in the page from its first script on: CSP violations and uncaught errors.
        context.add_init_script(
            """
            window.__violations = [];
            document.addEventListener('securitypolicyviolation', (e) =>
              window.__violations.push(`${e.violatedDirective} blocked ${e.blockedURI} (${e.sourceFile}:${e.lineNumber})`));
            """
        )
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        page.on(
            "console",
            lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
        )

        try:
            drive(page, errors)
        except Exception:
            # What the page looked like when it failed, for whoever reads the test's output.
            where = os.environ.get("FAILURE_DIR")
            if where:
                os.makedirs(where, exist_ok=True)
                page.screenshot(path=os.path.join(where, "console-failure.png"), full_page=True)
                with open(os.path.join(where, "console-failure.html"), "w") as f:
                    f.write(page.content())
                print(f"console.py: the page at the failure is in {where}/console-failure.*", flush=True)
            raise
        browser.close()
    step("all good")


def drive(page, errors):
    if True:
        step("open the console")
        response = page.goto(f"{BASE}/console/")
        assert response.status == 200, response.status
        csp = response.headers.get("content-security-policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp
        expect(page.locator("#api-key")).to_be_visible()

        step("a wrong key shows the API's error")
        page.fill("#api-key", "not-a-key")
        page.click("form.signin button[type=submit]")
        expect(page.locator("#error")).to_contain_text("UNAUTHENTICATED")
        expect(page.locator("#nav")).to_be_hidden()
        shot(page, "sign-in-error")
        # The console's own 401 is not a page error.
        errors[:] = [e for e in errors if "401" not in e]

        step("sign in")
        page.fill("#api-key", KEY)
        page.click("form.signin button[type=submit]")
        expect(page.locator("#tenant")).to_have_text("default")
        expect(page.locator("#role")).to_have_text("owner")
        expect(page.locator("#error")).to_be_hidden()
        assert page.evaluate("localStorage.length") == 0, "the key went to localStorage"
        assert page.evaluate("document.cookie") == "", "the console set a cookie"

        step("devices with presence and tags; filter by tag")
        rows = page.locator("#devices tbody tr")
        expect(rows.filter(has_text=DEVICE_NAME)).to_have_count(1)
        expect(rows.filter(has_text=OTHER_NAME)).to_have_count(1)
        expect(rows.filter(has_text=DEVICE_NAME).locator(".presence .badge")).to_have_text(
            re.compile("online|offline|unknown")
        )
        expect(rows.filter(has_text=DEVICE_NAME)).to_contain_text(ONLY_TAG)
        page.fill("#tag-filter", ONLY_TAG)
        page.press("#tag-filter", "Enter")
        expect(rows.filter(has_text=OTHER_NAME)).to_have_count(0)
        expect(rows.filter(has_text=DEVICE_NAME)).to_have_count(1)

        step("run a command and see its output live")
        page.goto(f"{BASE}/console/#/run?device={DEVICE_ID}")
        page.fill("#run-command", "sh -c 'echo first-line; sleep 4; echo second-line'")
        page.click("#run-form button[type=submit]")
        panel = page.locator("#run-result .output-panel")
        expect(panel.locator("pre.output")).to_contain_text("first-line")
        # The first line is there while the command still sleeps: it came live.
        assert panel.get_attribute("data-ended") is None, "the job had already ended"
        assert "second-line" not in panel.locator("pre.output").inner_text()
        shot(page, "run-live")
        expect(panel).to_have_attribute("data-ended", "finished", timeout=30_000)
        expect(panel.locator("pre.output")).to_contain_text("second-line")
        expect(panel.locator(".output-status")).to_contain_text("exit 0")

        step("the job's detail")
        page.click("#run-result a.job-link")
        expect(page.locator("dl.facts")).to_contain_text("finished")
        expect(page.locator(".job-output pre.output")).to_contain_text("second-line")
        shot(page, "job")

        step("a template with arguments")
        page.goto(f"{BASE}/console/#/run?device={DEVICE_ID}")
        page.check("input[name=what][value=template]")
        page.select_option("#run-template", "docker_logs")
        page.fill("#run-form .args input[name=container]", "nginx")
        page.fill("#run-form .args input[name=lines]", "5")
        page.click("#run-form button[type=submit]")
        panel = page.locator("#run-result .output-panel")
        # The test devices run no docker daemon (or have no docker at all): the template ran,
        # and the device said why it failed, on stderr.
        expect(panel).to_have_attribute("data-ended", "finished", timeout=30_000)
        expect(panel.locator(".output-status")).to_contain_text(re.compile(r"exit [1-9][0-9]*"))
        expect(panel.locator("pre.output .stderr")).to_contain_text(re.compile(r"\S"))
        page.click("#run-result a.job-link")
        expect(page.locator("dl.facts")).to_contain_text("docker logs nginx --tail 5")

        step("the run on a tag is a batch with live progress")
        page.goto(f"{BASE}/console/#/run?tags={FLEET_TAG}")
        page.fill("#run-command", "sh -c 'sleep 1; echo fleet-ok'")
        page.fill("#run-concurrency", "1")
        page.click("#run-form button[type=submit]")
        batch = page.locator("#run-result [data-status]").first
        expect(batch).to_have_attribute("data-status", "in_progress")
        expect(batch).to_have_attribute("data-status", "success", timeout=60_000)
        expect(batch.locator(".counts")).to_contain_text(f"finished {FLEET_SIZE}")
        expect(batch.locator(".progress .seg-finished")).to_have_count(1)
        batch.locator(".batch-targets tbody tr button").first.click()
        expect(batch.locator(".output-panel pre.output").first).to_contain_text("fleet-ok")
        shot(page, "batch")

        step("the batch and job lists")
        page.goto(f"{BASE}/console/#/batches")
        expect(page.locator("#batches tbody tr").first).to_contain_text("success")
        page.goto(f"{BASE}/console/#/jobs")
        expect(page.locator("#jobs tbody tr")).to_have_count(JOBS_BEFORE + 2 + FLEET_SIZE)
        shot(page, "jobs")

        step("device names past the first 100 devices")
        late_row = page.locator(f"#jobs tbody tr[data-job-id='{LATE_JOB}']")
        expect(late_row.locator("td.device")).to_have_text(LATE_NAME)
        page.goto(f"{BASE}/console/#/sessions")
        expect(page.locator(f"#sessions tbody tr[data-session-id='{LATE_JOB}'] td.device")).to_have_text(LATE_NAME)
        page.goto(f"{BASE}/console/#/jobs/{LATE_JOB}")
        expect(page.locator("dl.facts")).to_contain_text(LATE_NAME)
        page.goto(f"{BASE}/console/#/run?device={LATE_ID}")
        expect(page.locator("#run-device option:checked")).to_contain_text(LATE_NAME)
        page.goto(f"{BASE}/console/#/run")
        expect(page.locator("#run-device option")).to_have_count(100)
        page.fill("#run-device-find", LATE_NAME.upper())
        expect(page.locator("#run-device option")).to_have_count(1)
        expect(page.locator("#run-device option")).to_contain_text(LATE_NAME)
        page.fill("#run-device-find", "no-such-device-name")
        expect(page.locator("#run-device option")).to_have_text(["no device matches"])

        step("a batch's skipped targets, every one, page after page")
        page.goto(f"{BASE}/console/#/run?tags={CROWD_TAG}")
        page.fill("#run-command", "echo crowd")
        page.click("#run-form button[type=submit]")
        batch = page.locator("#run-result [data-status]").first
        expect(batch).not_to_have_attribute("data-status", "in_progress", timeout=60_000)
        expect(batch.locator(".skipped-title")).to_have_text(f"Skipped targets ({CROWD_SKIPPED})")
        expect(batch.locator(".batch-targets tbody tr")).to_have_count(1)
        skipped_rows = batch.locator(".batch-skipped tbody tr")
        seen = []
        pages_seen = 0
        while True:
            pages_seen += 1
            expect(skipped_rows.first).to_be_visible()
            seen += [r.strip() for r in skipped_rows.locator("td:first-child").all_inner_texts()]
            next_button = batch.locator(".batch-skipped + .pager button", has_text="Next")
            if next_button.count() == 0 or next_button.is_disabled():
                break
            first = skipped_rows.first.inner_text()
            next_button.click()
            expect(skipped_rows.first).not_to_have_text(first)
        fillers = {f"y-filler-{i:03}{FILLER_SUFFIX}" for i in range(CROWD_SKIPPED)}
        assert sorted(seen) == sorted(fillers), f"skipped targets listed: {len(seen)} {seen[:5]}"
        assert pages_seen == -(-CROWD_SKIPPED // 25), f"{pages_seen} pages"
        expect(skipped_rows.first).to_contain_text("pending")
        shot(page, "batch-skipped")

        step("a recording plays in asciinema-player")
        page.goto(f"{BASE}/console/#/sessions")
        expect(page.locator(f"#sessions tbody tr[data-session-id='{RECORDING}']")).to_have_count(1)
        page.goto(f"{BASE}/console/#/sessions/{RECORDING}")
        term = page.locator("#player .ap-term")
        expect(term).to_contain_text("tick1", timeout=20_000)
        early = term.inner_text()
        assert "tick6" not in early, f"the whole recording showed at once: {early!r}"
        expect(term).to_contain_text("tick6", timeout=20_000)
        shot(page, "session-replay")

        step("a shell is refused, plainly, while the tenant does not allow them")
        page.goto(f"{BASE}/console/#/shell/{DEVICE_ID}")
        expect(page.locator("#shell-state")).to_contain_text("does not allow interactive shells")
        answer = page.request.patch(
            f"{BASE}/v1/tenant", headers={"X-API-Key": KEY}, data={"interactive_sessions": True}
        )
        assert answer.ok, f"PATCH /v1/tenant: {answer.status} {answer.text()}"

        step("an interactive shell")
        page.goto(f"{BASE}/console/#/devices")
        page.goto(f"{BASE}/console/#/shell/{DEVICE_ID}")
        expect(page.locator("#shell-state")).to_contain_text("connected")
        expect(page.locator("#terminal")).to_have_attribute("data-session", re.compile(".+"))
        page.click("#terminal")
        # The shell computes the marker: an echo of the typed text alone could not show it.
        page.keyboard.type("echo hi-$((6*7))-$((100+23))")
        page.keyboard.press("Enter")
        expect(page.locator("#terminal .xterm-rows")).to_contain_text("hi-42-123")
        shot(page, "shell")

        step("resizing the window resizes the remote terminal")

        def stty_size(marker):
            # `stty size` on the device, between markers the shell computes.
            page.keyboard.type(f"echo {marker}$((1+1))-$(stty size | tr ' ' x)-end")
            page.keyboard.press("Enter")
            pattern = re.compile(f"{marker}2-(\\d+)x(\\d+)-end")
            expect(page.locator("#terminal .xterm-rows")).to_contain_text(pattern)
            found = pattern.search(page.locator("#terminal .xterm-rows").inner_text())
            return int(found.group(1)), int(found.group(2))

        before = stty_size("before")
        page.set_viewport_size({"width": 900, "height": 560})
        page.wait_for_timeout(500)
        after = stty_size("after")
        assert after[0] < before[0] and after[1] < before[1], f"size {before} -> {after}"
        page.set_viewport_size({"width": 1280, "height": 800})
        page.keyboard.type("exit")
        page.keyboard.press("Enter")
        expect(page.locator("#shell-state")).to_contain_text("closed")
        expect(page.locator("#shell-state")).to_contain_text("exited with status 0")

        step("an administrator closes a live shell from its session page")
        # Two hash changes in one task queue two `hashchange` events that both see the shell's
        # hash: the console must open one shell, not two (the test counts them at the end).
        page.evaluate(
            "id => { location.hash = '#/devices'; location.hash = `#/shell/${id}`; }", DEVICE_ID
        )
        expect(page.locator("#terminal")).to_have_attribute("data-session", re.compile(".+"))
        live = page.locator("#terminal").get_attribute("data-session")
        admin = page.context.new_page()  # another tab: its own sessionStorage, so it signs in
        admin.goto(f"{BASE}/console/")
        admin.fill("#api-key", KEY)
        admin.click("form.signin button[type=submit]")
        expect(admin.locator("#role")).to_have_text("owner")
        for _ in range(40):  # until the read model has the live shell
            admin.goto(f"{BASE}/console/#/sessions/{live}")
            admin.reload()
            if admin.locator("#close-session").count():
                break
            time.sleep(0.25)
        expect(admin.locator("#close-session")).to_be_enabled()
        admin.click("#close-session")
        expect(admin.locator(".session-actions")).to_contain_text("being closed")
        expect(page.locator("#shell-state")).to_contain_text("closed", timeout=20_000)
        admin.close()

        step("presence changes show up live in the device list")
        page.goto(f"{BASE}/console/#/devices")
        presence = page.locator("#devices tbody tr", has_text=DEVICE_NAME).locator(".presence .badge")
        expect(presence).to_have_text("unknown")
        # An agent's heartbeats (the stack expects one a second and turns a device offline
        # after two missed): the page, polling, shows it online, then offline once they stop.
        for _ in range(40):
            answer = page.request.post(
                f"{BASE}/v1/devices/{DEVICE_ID}/heartbeat", headers={"X-API-Key": KEY}
            )
            assert answer.ok, f"heartbeat: {answer.status} {answer.text()}"
            if presence.inner_text() == "online":
                break
            time.sleep(0.5)
        expect(presence).to_have_text("online", timeout=1_000)
        shot(page, "devices")
        expect(presence).to_have_text("offline", timeout=20_000)

        step("sign out forgets the key")
        page.click("#signout")
        expect(page.locator("#api-key")).to_be_visible()
        assert page.evaluate("sessionStorage.length") == 0, "the key outlived sign-out"
        page.goto(f"{BASE}/console/#/jobs")
        expect(page.locator("#api-key")).to_be_visible()

        step("an observer sees why it may not run commands or open shells")
        page.fill("#api-key", OBSERVER_KEY)
        page.click("form.signin button[type=submit]")
        expect(page.locator("#role")).to_have_text("observer")
        page.goto(f"{BASE}/console/#/devices")
        expect(page.locator(".notice.access")).to_contain_text("may not run commands")
        expect(page.locator(".notice.access")).to_contain_text("may not open interactive shells")
        row = page.locator("#devices tbody tr", has_text=DEVICE_NAME)
        expect(row.locator("button.denied[data-denied=exec]")).to_be_disabled()
        expect(row.locator("button.denied[data-denied=exec]")).to_have_text("Run")
        expect(row.locator("button.denied[data-denied=shell]")).to_be_disabled()
        expect(row.locator("a.button", has_text="Run")).to_have_count(0)
        expect(row.locator("a.button", has_text="Shell")).to_have_count(0)
        expect(row.locator("a.button", has_text="Sessions")).to_have_count(1)
        shot(page, "observer")
        page.goto(f"{BASE}/console/#/run?device={DEVICE_ID}")
        expect(page.locator("#run-denied")).to_contain_text("observer")
        expect(page.locator("#run-form")).to_have_count(0)
        page.goto(f"{BASE}/console/#/shell/{DEVICE_ID}")
        expect(page.locator("#shell-state")).to_contain_text("may not open interactive shells")
        expect(page.locator("#terminal .xterm")).to_have_count(0)
        page.goto(f"{BASE}/console/#/jobs/{LATE_JOB}")
        expect(page.locator("dl.facts")).to_contain_text(LATE_NAME)
        expect(page.locator("button", has_text="Cancel job")).to_be_hidden()
        # The owner's live shell, seen by the observer: no way to close it, and why.
        owner = page.context.new_page()
        owner.goto(f"{BASE}/console/")
        owner.fill("#api-key", KEY)
        owner.click("form.signin button[type=submit]")
        expect(owner.locator("#role")).to_have_text("owner")
        owner.goto(f"{BASE}/console/#/shell/{DEVICE_ID}")
        expect(owner.locator("#terminal")).to_have_attribute("data-session", re.compile(".+"))
        live = owner.locator("#terminal").get_attribute("data-session")
        for _ in range(40):  # until the read model has the live shell
            page.goto(f"{BASE}/console/#/sessions/{live}")
            page.reload()
            if page.locator(".session-actions").count():
                break
            time.sleep(0.25)
        denied = page.locator(".session-actions button.denied[data-denied=sessions]")
        expect(denied).to_be_disabled()
        expect(denied).to_have_text("Close session")
        expect(page.locator(".session-actions")).to_contain_text(
            "(observer) may not close other people's live shells"
        )
        expect(page.locator("#close-session")).to_have_count(0)
        owner.bring_to_front()
        owner.click("#terminal")
        owner.keyboard.type("exit")
        owner.keyboard.press("Enter")
        expect(owner.locator("#shell-state")).to_contain_text("exited with status 0")
        owner.close()
        page.bring_to_front()
        page.click("#signout")
        expect(page.locator("#api-key")).to_be_visible()

        violations = page.evaluate("window.__violations")
        assert not violations, f"Content-Security-Policy violations: {violations}"
        assert not errors, f"page errors: {errors}"


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - the reason is the test's output
        print(f"console.py: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
