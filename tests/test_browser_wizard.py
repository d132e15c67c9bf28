"""The session wizard in a real Chromium: alice signs in through the login
form and creates her sessions with the mouse and the keyboard, with app.js
running (port defaults, conditional fields, the test buttons).

Screenshots of every step land in var/screenshots/ for a human to look at.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from mailsessions.models import MailSession, Mode
from tests.browser import login, screenshot
from tests.conftest import PASSWORDS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The fixtures, made visible here because tests.browser is not (yet) listed in
# the root conftest's pytest_plugins; drop these two lines once it is.


def wizard_step(page) -> str:
    return page.locator("section.wizard").get_attribute("data-step")


def open_wizard(page, live_server, alice) -> None:
    login(page, live_server.url, "alice", PASSWORDS["alice"])
    page.get_by_role("link", name="New mail session").click()
    expect(page.get_by_role("heading", name="New mail session")).to_be_visible()
    assert wizard_step(page) == "mode"


def label(page, text: str):
    """The control labelled exactly ``text`` (Django may add a ":" suffix)."""
    return page.get_by_label(re.compile(rf"^{re.escape(text)}:?$"))


def field(page, name: str):
    """The box (label, input, help, errors) of one form field."""
    return page.locator(f'[data-field="{name}"]')


def test_read_and_send_wizard_with_port_defaults_conditional_fields_and_errors(
    page, live_server, alice
):
    open_wizard(page, live_server, alice)
    screenshot(page, "read_send-1-mode")
    page.get_by_role("radio", name="Read and send mails").check()
    page.get_by_role("button", name="Next").click()

    # Incoming: the port follows protocol and encryption (app.js).
    expect(page.locator('section.wizard[data-step="incoming"]')).to_be_visible()
    port = label(page, "Server Port")
    expect(port).to_have_value("")
    page.get_by_role("radio", name="IMAP").check()
    page.get_by_role("radio", name="SSL/TLS").check()
    expect(port).to_have_value("993")
    page.get_by_role("radio", name="STARTTLS").check()
    expect(port).to_have_value("143")
    page.get_by_role("radio", name="POP3").check()
    page.get_by_role("radio", name="SSL/TLS").check()
    expect(port).to_have_value("995")

    # Exchange settings appear only for Exchange.
    ews_fields = [field(page, n) for n in ("ews_endpoint", "ews_auth_type", "ews_email")]
    for box in ews_fields:
        expect(box).to_be_hidden()
    page.get_by_role("radio", name="Exchange (EWS)").check()
    for box in ews_fields:
        expect(box).to_be_visible()
    expect(port).to_have_value("443")
    screenshot(page, "read_send-2-incoming-exchange")
    page.get_by_role("radio", name="IMAP").check()
    for box in ews_fields:
        expect(box).to_be_hidden()
    expect(port).to_have_value("993")

    # A port the user typed is kept when protocol or encryption changes.
    port.fill("10993")
    page.get_by_role("radio", name="STARTTLS").check()
    expect(port).to_have_value("10993")
    page.get_by_role("radio", name="POP3").check()
    expect(port).to_have_value("10993")
    page.get_by_role("radio", name="IMAP").check()

    # "Test connection" answers in place: no navigation, no reload.
    url = page.url
    page.evaluate("window.__noReload = true")
    result = page.locator("[data-test-result]")
    expect(result).to_be_empty()
    page.get_by_role("button", name="Test connection").click()
    expect(result).not_to_be_empty()
    expect(result).to_be_visible()
    assert page.url == url
    assert page.evaluate("window.__noReload === true")

    # A server-side error is shown next to its own field, and keeps the step.
    label(page, "Server address").fill("mail example.org")
    label(page, "User account").fill("alice@example.test")
    label(page, "Password").fill("Imap-Pass-Plain-9917")
    page.get_by_role("button", name="Next").click()
    expect(field(page, "in_host").locator(".errors")).to_contain_text("cannot contain spaces")
    expect(field(page, "in_host")).to_have_class(a_class("has-error"))
    assert wizard_step(page) == "incoming"
    for other in ("in_port", "in_username", "in_protocol"):
        expect(field(page, other).locator(".errors")).to_have_count(0)
    screenshot(page, "read_send-3-incoming-error")
    # After the round trip the typed port still counts as the user's own.
    expect(port).to_have_value("10993")
    page.get_by_role("radio", name="SSL/TLS").check()
    expect(port).to_have_value("10993")
    # Clearing it hands the port back to the defaults.
    port.fill("")
    page.get_by_role("radio", name="STARTTLS").check()
    page.get_by_role("radio", name="SSL/TLS").check()
    expect(port).to_have_value("993")

    label(page, "Server address").fill("imap.example.test")
    expect(label(page, "Password")).to_have_value("")  # never re-rendered
    label(page, "Password").fill("Imap-Pass-Plain-9917")
    page.get_by_role("button", name="Next").click()

    # Outgoing: own credentials only with "Use Different Credentials".
    expect(page.locator('section.wizard[data-step="outgoing"]')).to_be_visible()
    different = label(page, "Use Different Credentials")
    expect(different).to_be_visible()
    expect(different).not_to_be_checked()
    expect(field(page, "out_username")).to_be_hidden()
    expect(field(page, "out_password")).to_be_hidden()
    different.check()
    expect(field(page, "out_username")).to_be_visible()
    expect(field(page, "out_password")).to_be_visible()
    screenshot(page, "read_send-4-outgoing-different-credentials")
    different.uncheck()
    expect(field(page, "out_username")).to_be_hidden()
    expect(field(page, "out_password")).to_be_hidden()

    out_port = label(page, "SMTP Server Port")
    label(page, "SMTP server address").fill("smtp.example.test")
    page.get_by_role("radio", name="SSL/TLS").check()
    expect(out_port).to_have_value("465")
    page.get_by_role("radio", name="STARTTLS").check()
    expect(out_port).to_have_value("587")
    label(page, "Send test mail to").fill("bob@example.test")
    page.get_by_role("button", name="Next").click()

    # Review: a summary of both parts, never the password.
    expect(page.locator('section.wizard[data-step="review"]')).to_be_visible()
    summary = page.locator("section.wizard")
    expect(summary).to_contain_text("imap.example.test")
    expect(summary).to_contain_text("smtp.example.test")
    assert "Imap-Pass-Plain-9917" not in page.content()
    label(page, "Session name").fill("Support inbox")
    screenshot(page, "read_send-5-review")
    page.get_by_role("button", name="Save session").click()

    # The detail page, then the list.
    session = MailSession.objects.get(owner=alice)
    expect(page).to_have_url(f"{live_server.url}{session.get_absolute_url()}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Support inbox")
    expect(page.get_by_role("status")).to_contain_text("Support inbox")
    settings = page.locator("dl.settings")
    expect(settings.nth(1)).to_contain_text("imap.example.test")
    expect(settings.nth(1)).to_contain_text("993")
    expect(settings.nth(2)).to_contain_text("smtp.example.test")
    expect(settings.nth(2)).to_contain_text("same as incoming account")
    screenshot(page, "read_send-6-detail")
    page.get_by_role("link", name="Sessions", exact=True).click()
    row = page.get_by_role("row", name="Support inbox")
    expect(row).to_contain_text("Read and send mails")
    expect(row).to_contain_text("IMAP · imap.example.test:993")
    expect(row).to_contain_text("SMTP · smtp.example.test:587")
    screenshot(page, "read_send-7-list")
    assert (session.mode, session.in_port, session.out_port) == (Mode.READ_SEND, 993, 587)
    assert session.incoming_config().password == "Imap-Pass-Plain-9917"


def test_send_only_wizard_never_shows_the_incoming_step(page, live_server, alice):
    open_wizard(page, live_server, alice)
    page.get_by_role("radio", name="Send mails via SMTP").check()
    page.get_by_role("button", name="Next").click()

    expect(page.locator('section.wizard[data-step="outgoing"]')).to_be_visible()
    steps = page.get_by_role("list", name="Steps")
    expect(steps.get_by_role("listitem")).to_have_text(
        ["Operation mode", "Outgoing mail", "Review and save"]
    )
    expect(page.get_by_role("heading", level=2)).to_contain_text("step 2 of 3")
    # The SMTP account is the only one: its user name and password are asked directly.
    expect(label(page, "Use Different Credentials")).to_have_count(0)
    expect(field(page, "out_username")).to_be_visible()
    expect(field(page, "out_password")).to_be_visible()
    screenshot(page, "send-1-outgoing")

    label(page, "SMTP server address").fill("smtp.example.test")
    page.get_by_role("radio", name="SSL/TLS").check()
    expect(label(page, "SMTP Server Port")).to_have_value("465")
    label(page, "User account").fill("robot@example.test")
    label(page, "Password").fill("Smtp-Only-Pw-55")
    page.get_by_role("button", name="Next").click()

    expect(page.locator('section.wizard[data-step="review"]')).to_be_visible()
    expect(steps.get_by_role("listitem")).to_have_text(
        ["Operation mode", "Outgoing mail", "Review and save"]
    )
    expect(page.locator("section.wizard h3")).to_have_text(["Operation mode", "Outgoing mail"])
    label(page, "Session name").fill("Sender")
    page.get_by_role("button", name="Save session").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Sender")
    expect(page.get_by_role("heading", name="Incoming mail")).to_have_count(0)
    expect(page.get_by_role("heading", name="Outgoing mail")).to_be_visible()
    session = MailSession.objects.get(owner=alice)
    assert (session.mode, session.in_host, session.out_port) == (Mode.SEND, "", 465)


def test_the_mode_step_works_with_the_keyboard_alone(page, live_server, alice):
    open_wizard(page, live_server, alice)
    read_send = page.get_by_role("radio", name="Read and send mails")
    expect(read_send).to_be_checked()  # the default

    # Tab into the radio group: focus lands on the checked radio.
    tab_until(page, "input[type=radio][name$='-mode']")
    expect(read_send).to_be_focused()
    page.keyboard.press("ArrowDown")
    read_only = page.get_by_role("radio", name="Read mails from inbox")
    expect(read_only).to_be_checked()
    expect(read_only).to_be_focused()
    page.keyboard.press("ArrowUp")
    expect(read_send).to_be_checked()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    send_only = page.get_by_role("radio", name="Send mails via SMTP")
    expect(send_only).to_be_checked()
    screenshot(page, "keyboard-1-mode-focused")

    # Tab on to "Next" (Back does not exist on the first step) and press Enter.
    tab_until(page, "button[type=submit].primary")
    expect(page.get_by_role("button", name="Next")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator('section.wizard[data-step="outgoing"]')).to_be_visible()

    # Space toggles a checkbox; Enter in a text field submits the step.
    tab_until(page, "input[name$='-out_host']")
    page.keyboard.type("smtp.example.test")
    tab_until(page, "input[name$='-out_no_auth']")
    page.keyboard.press("Space")
    expect(label(page, "Use no authentication")).to_be_checked()
    expect(field(page, "out_password")).to_be_hidden()
    tab_until(page, "input[name$='-out_username']")
    page.keyboard.type("relay@example.test")
    page.keyboard.press("Enter")
    # Enter submitted "Next" (not "Back"): the server asks for the encryption
    # next to its field and keeps what was typed.
    expect(page.locator('section.wizard[data-step="outgoing"]')).to_be_visible()
    expect(field(page, "out_encryption").locator(".errors")).to_be_visible()
    expect(label(page, "SMTP server address")).to_have_value("smtp.example.test")
    screenshot(page, "keyboard-2-outgoing-error")
    tab_until(page, "input[name$='-out_encryption']")
    page.keyboard.press("Space")  # the first choice, SSL/TLS
    expect(label(page, "SMTP Server Port")).to_have_value("465")
    tab_until(page, "button[type=submit].primary")
    page.keyboard.press("Enter")
    expect(page.locator('section.wizard[data-step="review"]')).to_be_visible()
    tab_until(page, "input[name$='-name']")
    page.keyboard.type("Relay")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Relay")
    session = MailSession.objects.get(owner=alice)
    assert (session.mode, session.out_no_auth, session.out_port) == (Mode.SEND, True, 465)


def tab_until(page, selector: str, limit: int = 40) -> None:
    """Press Tab until the focused element matches ``selector``."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} never received focus after {limit} Tab presses")


def a_class(name: str):
    return re.compile(rf"(^|\s){re.escape(name)}(\s|$)")
