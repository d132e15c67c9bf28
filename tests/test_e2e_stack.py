"""End to end: ``make run`` as real processes, driven by a real Chromium.

The whole embedded stack (gunicorn, a Celery worker, beat, the demo mailbox)
is started exactly as a newcomer starts it, with its own SQLite database and
broker under a temporary MAILSESSIONS_VAR_DIR and free ports, so nothing here
uses pytest-django's test database. The admin (created by ``firstrun``) then
does what the README promises: the demo session's connection test goes green,
a Read Mail operation reads the seeded messages, and a send-only session made
with the wizard delivers its test mail into the demo mailbox.

Screenshots of every step land in var/screenshots/e2e-<n>-<step>.png; two of
them are kept for the README as docs/images/wizard.png and
docs/images/connection-test.png.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from mailsessions.demo import DemoPorts
from tests.browser import login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
DOC_IMAGES = ROOT / "docs" / "images"
SCREENSHOTS = ROOT / "var" / "screenshots"
DEMO_PORTS = ("IMAP", "IMAPS", "POP3", "POP3S", "SMTP")
# Where the demo keeps its files when root's temp dir is not reachable by
# Dovecot (mailsessions.demo._reachable); removed after the run.
DEMO_FALLBACK = Path("/var/lib/mailsessions-demo")
# mailsessions.demo.seed_messages puts 35 of its 40 messages in the demo INBOX.
SEEDED_INBOX = 35
SEEDED_SUBJECTS = ("Quarterly report draft", "Grüße aus München – Übersicht für März")
START_TIMEOUT = 120  # make's deps step is a no-op when the venv stamp is fresh
RUN_TIMEOUT_MS = 30_000  # a connection test or a run goes through the worker


@dataclass
class Stack:
    url: str
    var_dir: Path
    log: Path
    process: subprocess.Popen
    ports: dict[str, int]
    demo_dir: Path | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def admin_password(self) -> str:
        return (self.var_dir / "admin-password.txt").read_text().strip()

    @property
    def demo_password(self) -> str:
        assert self.demo_dir is not None
        return (self.demo_dir / "password").read_text().strip()

    def wait_for(self, pattern: str, deadline: float) -> re.Match[str]:
        while time.monotonic() < deadline:
            output = self.output()
            if m := re.search(pattern, output):
                return m
            if trouble := re.search(r"Could not create the demo session.*|CommandError.*", output):
                pytest.fail(f"make run: {trouble.group(0)}\n{output[-4000:]}")
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"make run: no {pattern!r} in its output:\n{self.output()[-4000:]}")

    def stop(self) -> None:
        """Ctrl-C as a person would; then SIGTERM, then SIGKILL for the whole group."""
        for signum, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            # make has exited; anything it left behind gets a moment, then SIGKILL.
            deadline = time.monotonic() + 5
            while _group_alive(self.process.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open at once, so none repeats)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def stack_env(var_dir: Path, web_port: int, demo_ports: dict[str, int]) -> dict[str, str]:
    """This process's environment minus what would steer the stack away from
    its serverless defaults (a database or broker URL, other settings) or
    confuse a nested make (the jobserver of an outer ``make test``)."""
    dropped = ("DATABASE_URL", "PORT", "WEB_PORT", "DJANGO_ALLOW_ASYNC_UNSAFE", "DEBUG")
    dropped += ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in dropped and not k.startswith(("MAILSESSIONS_", "CELERY_"))
    }
    env.update(
        MAILSESSIONS_VAR_DIR=str(var_dir),
        WEB_PORT=str(web_port),
        PYTHONUNBUFFERED="1",  # log lines reach the log as they happen
        **{f"MAILSESSIONS_DEMO_{name}_PORT": str(port) for name, port in demo_ports.items()},
    )
    return env


def web_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    var_dir = tmp / "var"
    web_port, *demo = free_ports(1 + len(DEMO_PORTS))
    ports = dict(zip(DEMO_PORTS, demo, strict=True))
    log = tmp / "make-run.log"
    with log.open("wb") as out:  # read back by Stack.wait_for while it grows
        process = subprocess.Popen(
            ["make", "run"],
            cwd=ROOT,
            env=stack_env(var_dir, web_port, ports),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped as one
        )
    s = Stack(
        url=f"http://127.0.0.1:{web_port}", var_dir=var_dir, log=log, process=process, ports=ports
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        s.demo_dir = Path(s.wait_for(r"password in (\S+)/password", deadline).group(1))
        s.wait_for(r"“Demo mailbox” is ready for admin", deadline)
        s.wait_for(r"celery@\S+ ready\.", deadline)
        while not web_answers(s.url):
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"make run: {s.url}/healthz never answered:\n{s.output()[-4000:]}")
            time.sleep(0.1)
        yield s
    finally:
        s.stop()
        if s.demo_dir and s.demo_dir.parent == DEMO_FALLBACK:
            shutil.rmtree(s.demo_dir, ignore_errors=True)


def shot(page, n: int, step: str) -> None:
    screenshot(page, f"e2e-{n}-{step}")


def save_doc_image(locator, name: str) -> Path:
    """A README image of one element (small: no full page, no retina scale).

    Written to docs/images only with MAILSESSIONS_UPDATE_DOC_IMAGES=1, so
    ordinary runs leave the committed images alone.
    """
    directory = (
        DOC_IMAGES if os.environ.get("MAILSESSIONS_UPDATE_DOC_IMAGES") == "1" else SCREENSHOTS
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    locator.screenshot(path=str(path), animations="disabled")
    assert path.stat().st_size < 200_000, f"{path} is {path.stat().st_size} bytes"
    return path


def label(page, text: str):
    """The control labelled exactly ``text`` (Django may add a ":" suffix)."""
    return page.get_by_label(re.compile(rf"^{re.escape(text)}:?$"))


def test_demo_mailbox_from_sign_in_to_a_delivered_test_mail(page, stack):
    # 1. Sign in as the admin firstrun created.
    login(page, stack.url, "admin", stack.admin_password)
    expect(page.get_by_role("link", name="Demo mailbox")).to_be_visible()
    shot(page, 1, "signed-in")

    # 2. The demo session, made by the demo mailbox for the admin.
    page.get_by_role("link", name="Demo mailbox").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Demo mailbox")
    shot(page, 2, "demo-session")

    # 3. Test connection goes green, stage by stage, through the worker.
    panel = page.locator("[data-test-panel]")
    wait_for_test(panel, "Test connection")
    stages = assert_stages_green(panel, expect_names={"tcp", "starttls", "auth", "mailbox"})
    shot(page, 3, "connection-test")
    # The outcome is recorded on the session: a reload shows it with its stages.
    page.reload()
    card = page.locator("section.card", has=panel)
    expect(card.locator(".badge.ok")).to_contain_text("passed")
    expect(card.locator("ol.stages li.stage")).to_have_count(len(stages))
    save_doc_image(card, "connection-test.png")

    # 4. A Read Mail operation, run now: the seeded INBOX is stored.
    page.get_by_role("link", name="New Read Mail").click()
    label(page, "Name").fill("Read the demo inbox")
    shot(page, 4, "new-read-mail")
    page.get_by_role("button", name="Save operation").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Read the demo inbox")
    operation_url = page.url
    run_now_and_wait(page)
    rows = page.locator("table.list tbody tr")
    expect(rows.first).to_be_visible()
    assert rows.count() >= SEEDED_INBOX - 5, rows.count()
    for subject in SEEDED_SUBJECTS:
        expect(page.get_by_role("link", name=subject).first).to_be_visible()
    shot(page, 5, "read-mail-run")

    # 5. The wizard's Incoming step, filled in for the demo (README image).
    page.get_by_role("link", name="Sessions", exact=True).click()
    page.get_by_role("link", name="New mail session").click()
    page.get_by_role("radio", name="Read and send mails").check()
    page.get_by_role("button", name="Next").click()
    expect(page.locator('section.wizard[data-step="incoming"]')).to_be_visible()
    page.get_by_role("radio", name="IMAP").check()
    page.get_by_role("radio", name="STARTTLS").check()
    label(page, "Server address").fill("127.0.0.1")
    # The README shows the port a newcomer's demo listens on, not this run's.
    label(page, "Server Port").fill(str(DemoPorts().imap))
    label(page, "User account").fill("demo")
    label(page, "Password").fill(stack.demo_password)
    label(page, "Verify the server certificate").uncheck()
    shot(page, 6, "wizard-incoming")
    save_doc_image(page.locator("main"), "wizard.png")
    page.get_by_role("link", name="Cancel").click()

    # 6. A send-only session against the demo SMTP server; Send test mail passes.
    page.get_by_role("link", name="New mail session").click()
    page.get_by_role("radio", name="Send mails via SMTP").check()
    page.get_by_role("button", name="Next").click()
    expect(page.locator('section.wizard[data-step="outgoing"]')).to_be_visible()
    label(page, "SMTP server address").fill("127.0.0.1")
    page.get_by_role("radio", name="STARTTLS").check()
    label(page, "SMTP Server Port").fill(str(stack.ports["SMTP"]))
    label(page, "Verify the server certificate").uncheck()
    label(page, "User account").fill("demo")
    label(page, "Password").fill(stack.demo_password)
    label(page, "Sender address").fill("demo@localhost")
    label(page, "Send test mail to").fill("demo@localhost")
    panel = page.locator("[data-test-panel]")
    wait_for_test(panel, "Send test mail")
    assert_stages_green(panel, expect_names={"starttls", "auth", "send"})
    send = panel.locator('li.stage[data-stage="send"]')
    expect(send).to_have_class(re.compile(r"\bpassed\b"))
    expect(send).to_contain_text("250")  # the demo server's reply to DATA
    shot(page, 7, "wizard-send-test-mail")
    page.get_by_role("button", name="Next").click()
    expect(page.locator('section.wizard[data-step="review"]')).to_be_visible()
    label(page, "Session name").fill("Demo SMTP")
    page.get_by_role("button", name="Save session").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Demo SMTP")
    expect(page.get_by_role("heading", name="Outgoing mail")).to_be_visible()
    assert stack.demo_password not in page.content()
    shot(page, 8, "send-only-session")

    # 7. The test mail arrived: the next Read Mail run stores it.
    page.goto(operation_url)
    run_now_and_wait(page)
    expect(page.get_by_role("link", name=re.compile(r"Mail Sessions test mail"))).to_be_visible()
    shot(page, 9, "test-mail-arrived")
    assert imap_subjects(stack, "Mail Sessions test mail"), "not in the demo INBOX over IMAP"


def wait_for_test(panel, button: str) -> None:
    """Press a test button and wait until its stages say all passed."""
    panel.get_by_role("button", name=button).click()
    summary = panel.locator(".test-summary")
    expect(summary).to_be_attached(timeout=RUN_TIMEOUT_MS)  # "Queued…" has none yet
    expect(summary).not_to_have_class(re.compile(r"\bpending\b"), timeout=RUN_TIMEOUT_MS)
    expect(summary).to_have_text(re.compile(r"^All stages passed"))


def assert_stages_green(panel, expect_names: set[str]) -> dict[str, list[str]]:
    """Every stage the test panel shows passed (or passed with a warning)."""
    stages = panel.locator("li.stage")
    outcomes = {
        s.get_attribute("data-stage"): s.get_attribute("class").split() for s in stages.all()
    }
    assert expect_names <= outcomes.keys(), outcomes
    not_green = {n: c for n, c in outcomes.items() if not {"passed", "warning"} & set(c)}
    assert not not_green, not_green
    return outcomes


def run_now_and_wait(page) -> None:
    """Press Run now and wait for the run page to show a succeeded run."""
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Run of")
    status = page.locator("[data-run-status]")
    expect(status).not_to_have_attribute(
        "data-run-status", re.compile(r"^(queued|running)$"), timeout=RUN_TIMEOUT_MS
    )
    expect(status).to_have_attribute("data-run-status", "succeeded")
    # The page reloads itself once the run is done; wait for that version.
    expect(page.locator(".pending")).to_have_count(0, timeout=RUN_TIMEOUT_MS)


def imap_subjects(stack: Stack, needle: str) -> list[bytes]:
    """Search the demo INBOX directly (STARTTLS, the demo's self-signed cert)."""
    from imapclient import IMAPClient

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with IMAPClient("127.0.0.1", stack.ports["IMAP"], ssl=False, timeout=10) as client:
        client.starttls(context)
        client.login("demo", stack.demo_password)
        client.select_folder("INBOX", readonly=True)
        return client.search(["SUBJECT", needle])
