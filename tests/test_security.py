"""Who gets in, and what never leaks.

Personas: alice owns a session with everything hanging off it (operations of
every kind, a run, a stored message with an attachment, a connection test);
bob is another ordinary user and must get a 404 for each of her objects;
carol is staff: the admin is hers, alice's app pages are not (404 as well);
an anonymous visitor is sent to sign in and sees no data.

Credentials are canaries (recognizable strings) that are searched for in every
place a password could end up: pages, admin, database rows, the wizard's
session storage, logs at DEBUG, reprs, error messages, exception reports and
broker messages.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.sessions.models import Session
from django.core.files.base import ContentFile
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, path, reverse
from django.views.debug import ExceptionReporter

import mailsessions.urls
from mailsessions import auth, runs, services
from mailsessions.models import (
    ConnectionTest,
    MailSession,
    Mode,
    Operation,
    OperationKind,
    Run,
    RunStatus,
    StoredAttachment,
    StoredMessage,
)
from mailsessions.models import (
    TestKind as ConnectionTestKind,
)
from mailsessions.wizard import Step
from tests.factories import make_session
from tests.servers.dovecot import make_message
from tests.wizard_walk import INCOMING_IMAP, NEW_PREFIX, post_step, step_payload

SECRET_NAME = "Alice Private Inbox"
SECRET_SUBJECT = "Alice private subject 7Q"


@pytest.fixture(autouse=True)
def _fresh_login_counts(request):
    from django.core.cache import caches
    from django.core.cache.backends.db import DatabaseCache

    uses_db = {"db", "transactional_db"} & set(request.fixturenames)
    for cache in caches.all():
        if uses_db or not isinstance(cache, DatabaseCache):
            cache.clear()
    yield


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


# --- the world alice owns -------------------------------------------------------


@dataclass
class World:
    session: MailSession
    ops: dict[str, Operation]
    run: Run
    test: ConnectionTest
    message: StoredMessage
    attachment: StoredAttachment
    extra: dict[str, Any] = field(default_factory=dict)


def _operation(session, kind, **params) -> Operation:
    operation = Operation(session=session, name=f"{kind} op", kind=kind, **params)
    operation.full_clean()
    operation.save()
    return operation


@pytest.fixture
def world(alice, media) -> World:
    session = make_session(alice, name=SECRET_NAME, mode=Mode.READ_SEND)
    ops = {
        OperationKind.READ: _operation(session, OperationKind.READ),
        OperationKind.SEND: _operation(
            session, OperationKind.SEND, send_to="bob@example.test", send_subject="Hi"
        ),
        OperationKind.SET: _operation(session, OperationKind.SET, set_action="mark_read"),
    }
    run = Run.objects.create(operation=ops[OperationKind.READ], status=RunStatus.SUCCEEDED)
    test = ConnectionTest.objects.create(
        owner=alice,
        session=session,
        kind=ConnectionTestKind.INCOMING,
        target="IMAP mail.example.test:993",
    )
    message = StoredMessage.objects.create(
        session=session, run=run, folder="INBOX", server_id="1", subject=SECRET_SUBJECT
    )
    message.raw.save("1.eml", ContentFile(f"Subject: {SECRET_SUBJECT}\r\n\r\nhi\r\n".encode()))
    attachment = StoredAttachment(message=message, filename="report.pdf", size=5)
    attachment.file.save("report.pdf", ContentFile(b"%PDF-"))
    return World(session, ops, run, test, message, attachment)


# --- the access matrix -------------------------------------------------------------

LOGIN = "login"  # 302 to the sign-in page
ADMIN_LOGIN = "admin-login"  # 302 to the admin's sign-in page


@dataclass(frozen=True)
class Probe:
    """One request and what each persona gets: a status code or LOGIN."""

    args: Any  # callable World -> list of URL args
    anon: Any
    owner: Any
    other: Any
    staff: Any
    method: str = "get"
    data: dict | None = None
    headers: dict | None = None
    fresh_client: bool = False  # the request changes the client (logout)
    label: str = ""


def _no_args(w: World) -> list:
    return []


def _session(w: World) -> list:
    return [w.session.pk]


def _op(kind):
    return lambda w: [w.ops[kind].pk]


def _std(args, label="", **kw) -> Probe:
    """An object page: sign in / page / 404 / 404."""
    return Probe(args, anon=LOGIN, owner=200, other=404, staff=404, label=label, **kw)


# Every URL name of mailsessions.urls must have an entry (see
# test_every_url_has_an_access_expectation): a new URL without one fails.
ACCESS: dict[str, list[Probe]] = {
    "<root>": [Probe(_no_args, anon=302, owner=302, other=302, staff=302)],
    "mailsessions:session-list": [Probe(_no_args, anon=LOGIN, owner=200, other=200, staff=200)],
    "mailsessions:session-create": [
        Probe(_no_args, anon=LOGIN, owner=200, other=200, staff=200),
        # The wizard's Test button with the unsaved data of a step: JSON.
        Probe(
            _no_args,
            anon=LOGIN,
            owner=400,  # the incoming step is not valid yet: 400 naming fields
            other=400,
            staff=400,
            method="post",
            data={**step_payload(NEW_PREFIX, Step.INCOMING, {}), "wizard_test": "incoming"},
            label="wizard test button",
        ),
    ],
    "mailsessions:session-detail": [_std(_session)],
    "mailsessions:session-edit": [_std(_session)],
    "mailsessions:session-delete": [
        _std(_session),
        Probe(_session, anon=LOGIN, owner=None, other=404, staff=404, method="post"),
    ],
    "mailsessions:session-test": [
        Probe(
            lambda w, k=kind: [w.session.pk, k],
            anon=LOGIN,
            owner=202,
            other=404,
            staff=404,
            method="post",
            label=kind,
        )
        for kind in ConnectionTestKind.values
    ],
    "mailsessions:test-status": [_std(lambda w: [w.test.pk])],
    "mailsessions:operation-create": [
        _std(lambda w, k=kind: [w.session.pk, k], label=kind) for kind in OperationKind.values
    ]
    + [
        Probe(
            lambda w: [w.session.pk, OperationKind.READ],
            anon=LOGIN,
            owner=None,
            other=404,
            staff=404,
            method="post",
            data={"name": "Sneaky", "folder": "INBOX", "after_read": "leave"},
        )
    ],
    "mailsessions:operation-detail": [_std(_op(k), label=k) for k in OperationKind.values],
    "mailsessions:operation-edit": [_std(_op(k), label=k) for k in OperationKind.values],
    "mailsessions:operation-delete": [
        _std(_op(OperationKind.SET)),
        Probe(_op(OperationKind.SET), anon=LOGIN, owner=None, other=404, staff=404, method="post"),
    ],
    "mailsessions:operation-run": [
        Probe(_op(OperationKind.READ), anon=LOGIN, owner=302, other=404, staff=404, method="post")
    ],
    "mailsessions:run-detail": [
        _std(lambda w: [w.run.pk], label="html"),
        _std(lambda w: [w.run.pk], label="json", headers={"Accept": "application/json"}),
    ],
    "mailsessions:message-list": [_std(_session)],
    "mailsessions:message-detail": [_std(lambda w: [w.message.pk])],
    "mailsessions:message-raw": [_std(lambda w: [w.message.pk])],
    "mailsessions:attachment-download": [_std(lambda w: [w.attachment.pk])],
    "login": [Probe(_no_args, anon=200, owner=200, other=200, staff=200)],
    "logout": [
        Probe(_no_args, anon=302, owner=302, other=302, staff=302, method="post", fresh_client=True)
    ],
    "healthz": [Probe(_no_args, anon=200, owner=200, other=200, staff=200)],
    # The admin include: see test_admin_access for every mailsessions model.
    "admin:": [Probe(_no_args, anon=ADMIN_LOGIN, owner=ADMIN_LOGIN, other=ADMIN_LOGIN, staff=200)],
}


def _url_names(patterns, prefix: str = ""):
    for p in patterns:
        if isinstance(p, URLResolver):
            if p.namespace == "admin":
                yield "admin:"
                continue
            ns = f"{prefix}{p.namespace}:" if p.namespace else prefix
            yield from _url_names(p.url_patterns, ns)
        elif isinstance(p, URLPattern):
            if p.name:
                yield prefix + p.name
            else:
                yield "<root>" if str(p.pattern) == "" else f"<unnamed {p.pattern}>"


def test_every_url_has_an_access_expectation():
    names = set(_url_names(mailsessions.urls.urlpatterns))
    missing = names - set(ACCESS)
    assert not missing, f"URLs without an access expectation in ACCESS: {sorted(missing)}"
    stale = set(ACCESS) - names
    assert not stale, f"ACCESS lists URLs that no longer exist: {sorted(stale)}"


def _url(name: str, args: list) -> str:
    if name == "<root>":
        return "/"
    if name == "admin:":
        return reverse("admin:index")
    return reverse(name, args=args)


def _check(response, expected, *, url: str, who: str) -> None:
    where = f"{who} {response.request['REQUEST_METHOD']} {url}"
    if expected == LOGIN:
        assert response.status_code == 302, (where, response.status_code)
        assert response.url.startswith(reverse("login") + "?next="), (where, response.url)
    elif expected == ADMIN_LOGIN:
        assert response.status_code == 302, (where, response.status_code)
        assert response.url.startswith(reverse("admin:login")), (where, response.url)
    else:
        assert response.status_code == expected, (where, response.status_code)


def _body(response) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return response.content


@pytest.mark.django_db
def test_access_matrix(world, alice, bob, carol):
    clients = {"anon": Client(), "owner": Client(), "other": Client(), "staff": Client()}
    users = {"owner": alice, "other": bob, "staff": carol}
    for who, user in users.items():
        clients[who].force_login(user)
    probed = 0
    for name, probes in ACCESS.items():
        for probe in probes:
            url = _url(name, probe.args(world))
            for who in ("anon", "other", "staff", "owner"):
                expected = getattr(probe, who)
                if expected is None:
                    continue
                client = clients[who]
                if probe.fresh_client:
                    client = Client()
                    if who in users:
                        client.force_login(users[who])
                response = getattr(client, probe.method)(
                    url, probe.data or {}, headers=probe.headers or {}
                )
                _check(response, expected, url=f"{url} [{probe.label}]", who=who)
                if who != "owner":
                    body = _body(response)
                    # Never a byte of alice's data for anyone else.
                    for secret in (SECRET_NAME, SECRET_SUBJECT, "report.pdf", "%PDF-"):
                        assert secret.encode() not in body, (who, url, secret)
                probed += 1
    assert probed > 100
    # The refused POSTs changed nothing.
    assert MailSession.objects.filter(pk=world.session.pk).exists()
    assert Operation.objects.filter(pk=world.ops[OperationKind.SET].pk).exists()
    assert not Operation.objects.filter(name="Sneaky").exists()
    # alice's Run now (302) queued exactly one run; the others queued none.
    assert Run.objects.count() == 2
    # Her three test buttons started three tests, nobody else's did.
    assert ConnectionTest.objects.filter(session=world.session).count() == 1 + len(
        ConnectionTestKind
    )


@pytest.mark.django_db
def test_owner_deletes_only_with_post(world, alice):
    client = Client()
    client.force_login(alice)
    url = reverse("mailsessions:operation-delete", args=[world.ops[OperationKind.SET].pk])
    assert client.post(url).status_code == 302
    assert not Operation.objects.filter(pk=world.ops[OperationKind.SET].pk).exists()
    url = reverse("mailsessions:session-delete", args=[world.session.pk])
    assert client.post(url).status_code == 302
    assert not MailSession.objects.filter(pk=world.session.pk).exists()


# Admin views per registered model of this app: what staff (carol) gets; any
# non-staff user and anonymous visitors go to the admin's sign-in page.
ADMIN_MODELS: dict[str, dict[str, int]] = {
    "mailsession": {"changelist": 200, "add": 200, "change": 200, "history": 200, "delete": 200},
    "connectiontest": {
        "changelist": 200,
        "add": 200,
        "change": 200,
        "history": 200,
        "delete": 200,
    },
    "operation": {"changelist": 200, "add": 200, "change": 200, "history": 200, "delete": 200},
    "run": {"changelist": 200, "add": 403, "change": 200, "history": 200, "delete": 200},
    "storedmessage": {
        "changelist": 200,
        "add": 200,
        "change": 200,
        "history": 200,
        "delete": 200,
    },
}


def _admin_object(world: World, model: str):
    return {
        "mailsession": world.session,
        "connectiontest": world.test,
        "operation": world.ops[OperationKind.READ],
        "run": world.run,
        "storedmessage": world.message,
    }[model]


@pytest.mark.django_db
def test_admin_access(world, alice, carol):
    registered = {
        m._meta.model_name for m in admin.site._registry if m._meta.app_label == "mailsessions"
    }
    assert registered == set(ADMIN_MODELS), "every admin of this app needs an ADMIN_MODELS entry"
    staff, owner, anon = Client(), Client(), Client()
    staff.force_login(carol)
    owner.force_login(alice)
    for model, views in ADMIN_MODELS.items():
        for view, status in views.items():
            needs_pk = view in ("change", "history", "delete")
            args = [_admin_object(world, model).pk] if needs_pk else []
            url = reverse(f"admin:mailsessions_{model}_{view}", args=args)
            _check(staff.get(url), status, url=url, who="staff")
            _check(owner.get(url), ADMIN_LOGIN, url=url, who="owner")
            _check(anon.get(url), ADMIN_LOGIN, url=url, who="anon")
    assert MailSession.objects.filter(pk=world.session.pk).exists()  # GET delete only asks


# --- login rate limiting -------------------------------------------------------------

urlpatterns = [
    path("accounts/login/", auth.RateLimitedLoginView.as_view(), name="login"),
    *mailsessions.urls.urlpatterns,
]


@pytest.fixture(params=["locmem", "database"])
def login_urls(request, settings):
    """The app's URLs with the rate-limited login, counting in either cache."""
    from django.core.management import call_command

    settings.ROOT_URLCONF = __name__
    if request.param == "database":
        settings.CACHES = {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "logins": {
                "BACKEND": "django.core.cache.backends.db.DatabaseCache",
                "LOCATION": "test_login_failures",
            },
        }
        settings.MAILSESSIONS_LOGIN_CACHE = "logins"
        call_command("createcachetable", verbosity=0)
    return request.param


def _sign_in(client, username, password, ip="203.0.113.7"):
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip
    )


def _errors(response) -> str:
    return " ".join(response.context["form"].non_field_errors())


@pytest.mark.django_db
def test_five_failures_lock_the_user_name_not_the_others(login_urls, alice, bob, monkeypatch):
    from tests.conftest import PASSWORDS

    now = [1_000_000.0]
    monkeypatch.setattr(auth.limiter, "clock", lambda: now[0])
    client = Client()
    for _ in range(5):
        response = _sign_in(client, "alice", "wrong-password")
        assert "Please enter a correct username and password" in _errors(response)
    response = _sign_in(client, "alice", PASSWORDS["alice"])
    assert response.status_code == 200, "the right password was accepted while locked"
    assert "Too many failed sign-in attempts; try again in 5 minutes." in response.content.decode()
    assert "_auth_user_id" not in client.session
    # Same address, other user name: unaffected.
    response = _sign_in(Client(), "bob", PASSWORDS["bob"])
    assert response.status_code == 302
    # A user name differing only in case or spaces is the same user name.
    response = _sign_in(Client(), " ALICE ", PASSWORDS["alice"], ip="198.51.100.1")
    assert "Too many failed" in _errors(response)
    # Later the message counts down; after the window, sign-in works again.
    now[0] += 200
    assert "try again in 2 minutes" in _errors(_sign_in(client, "alice", PASSWORDS["alice"]))
    now[0] += 101
    response = _sign_in(client, "alice", PASSWORDS["alice"])
    assert response.status_code == 302 and response.url == reverse("mailsessions:session-list")


@pytest.mark.django_db
def test_one_address_trying_many_user_names_is_stopped(login_urls, alice, settings, monkeypatch):
    from tests.conftest import PASSWORDS

    settings.MAILSESSIONS_LOGIN_FAILURES_PER_IP = 8
    monkeypatch.setattr(auth.limiter, "clock", lambda: 5_000_000.0)
    for i in range(8):
        _sign_in(Client(), f"user{i}", "guess", ip="192.0.2.50")
    response = _sign_in(Client(), "alice", PASSWORDS["alice"], ip="192.0.2.50")
    assert "Too many failed" in _errors(response)
    # alice from elsewhere is fine.
    assert _sign_in(Client(), "alice", PASSWORDS["alice"], ip="192.0.2.51").status_code == 302


@pytest.mark.django_db
def test_forwarded_for_is_trusted_only_behind_configured_proxies(login_urls, settings, alice):
    from django.test import RequestFactory

    request = RequestFactory().get(
        "/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.1.1.1, 2.2.2.2"
    )
    assert auth.client_ip(request) == "10.0.0.1"
    settings.MAILSESSIONS_TRUSTED_PROXIES = 1
    assert auth.client_ip(request) == "2.2.2.2"  # the hop our proxy added, not the forged one


def test_the_sign_in_url_is_rate_limited():
    from django.urls import resolve

    assert resolve("/accounts/login/").func.view_class is auth.RateLimitedLoginView


# --- credentials never leak -------------------------------------------------------

CANARY_IN = "Canary-In-Pw-5fQ2x9"
CANARY_OUT = "Canary-Out-Pw-8kZ3m1"
CANARY_WRONG = "Canary-Wrong-Pw-3Hh7c4"
CANARY_WIZARD = "Canary-Wizard-Pw-6Tn8v2"
CANARIES = (CANARY_IN, CANARY_OUT, CANARY_WRONG, CANARY_WIZARD)

WIRE_LOGGERS = ("", "imapclient", "imapclient.imaplib", "exchangelib", "mail.log", "mailsessions")


def _forms(canary: str) -> list[str]:
    """The canary, and its base64 forms at any alignment (AUTH PLAIN/LOGIN)."""
    import base64

    forms = [canary]
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + canary.encode()).decode()
        forms.append(encoded[4:-4])  # the part that depends on the canary alone
    return forms


CANARY_FORMS = {c: _forms(c) for c in CANARIES}


def _leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [c for c, forms in CANARY_FORMS.items() if any(f in text for f in forms)]


@pytest.fixture(scope="module")
def canary_account(dovecot):
    dovecot.add_user("canary", CANARY_IN)
    return dovecot


def _app_pages(session: MailSession) -> list[str]:
    urls = [
        reverse("mailsessions:session-list"),
        reverse("mailsessions:session-detail", args=[session.pk]),
        reverse("mailsessions:session-edit", args=[session.pk]),
        reverse("mailsessions:session-delete", args=[session.pk]),
        reverse("mailsessions:message-list", args=[session.pk]),
    ]
    for test in ConnectionTest.objects.filter(session=session):
        urls.append(reverse("mailsessions:test-status", args=[test.pk]))
    for op in session.operations.all():
        urls += [
            reverse("mailsessions:operation-detail", args=[op.pk]),
            reverse("mailsessions:operation-edit", args=[op.pk]),
        ]
        for run in op.runs.all():
            urls.append(reverse("mailsessions:run-detail", args=[run.pk]))
    return urls


def _admin_pages(session: MailSession) -> list[str]:
    urls = []
    objects = {
        "mailsession": [session],
        "connectiontest": list(ConnectionTest.objects.all()),
        "operation": list(session.operations.all()),
        "run": list(Run.objects.all()),
        "storedmessage": list(StoredMessage.objects.all()),
    }
    for model, rows in objects.items():
        urls.append(reverse(f"admin:mailsessions_{model}_changelist"))
        urls += [reverse(f"admin:mailsessions_{model}_change", args=[r.pk]) for r in rows]
    return urls


def _database_dump() -> str:
    """Every row of every table, as text, plus the decoded Django sessions."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                chunks.append(f"{table}: {row!r}")
    # Session data is signed base64: decode it, or a plaintext would hide.
    for stored in Session.objects.all():
        chunks.append(json.dumps(stored.get_decoded()))
    return "\n".join(chunks)


@pytest.fixture
def leaky_world(alice, carol, canary_account, smtp_auth_plain, media, caplog):
    """alice's session on the canary account, used every way a password could leak.

    Returns the session and the alice client; logs are captured at DEBUG for
    every logger, library wire logs included.
    """
    for name in WIRE_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    canary_account.reset_mailbox("canary")
    canary_account.append("canary", "INBOX", make_message("Hello canary"))
    client = Client()
    client.force_login(alice)
    incoming = {
        **INCOMING_IMAP,
        "in_host": "127.0.0.1",
        "in_port": str(canary_account.imaps_port),
        "in_username": "canary",
        "in_password": CANARY_IN,
        "in_verify_certificate": False,
    }
    outgoing = {
        "out_host": "127.0.0.1",
        "out_port": str(smtp_auth_plain.port),
        "out_encryption": "none",
        "out_allow_plaintext": True,
        "out_use_different_credentials": True,
        "out_username": "alice",
        "out_password": CANARY_OUT,  # wrong for this server: the SMTP test fails
        "out_sender": "canary@example.test",
        "test_mail_to": "bob@example.test",
    }
    url = reverse("mailsessions:session-create")
    client.get(url)
    for step, data in [
        (Step.MODE, {"mode": Mode.READ_SEND}),
        (Step.INCOMING, incoming),
        (Step.OUTGOING, outgoing),
        (Step.REVIEW, {"name": "Canary"}),
    ]:
        response = post_step(client, step, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    session = MailSession.objects.get(name="Canary")
    # An abandoned second wizard keeps its steps in the Django session, and its
    # Test button leaves a queued test with encrypted settings behind.
    client.get(url)
    post_step(client, Step.MODE, {"mode": Mode.READ_SEND})
    post_step(client, Step.INCOMING, {**incoming, "in_password": CANARY_WIZARD})
    post_step(client, Step.OUTGOING, {**outgoing, "out_password": CANARY_WIZARD})
    pending = client.post(
        url,
        {
            **step_payload(NEW_PREFIX, Step.OUTGOING, {**outgoing, "out_password": CANARY_WIZARD}),
            "wizard_test": "outgoing",
        },
    )
    assert pending.status_code == 202, pending.content
    # Connection tests of the saved session, run here as a worker would.
    for kind in (
        ConnectionTestKind.INCOMING,
        ConnectionTestKind.OUTGOING,
        ConnectionTestKind.TEST_MAIL,
    ):
        response = client.post(reverse("mailsessions:session-test", args=[session.pk, kind]))
        assert response.status_code == 202, response.content
        services.connection_test_run(test_id=response.json()["id"])
    # A Read Mail run that works, then one with a wrong password.
    read = _operation(session, OperationKind.READ)
    assert runs.run_execute(run_id=runs.operation_run_now(operation=read).pk).stored == 1
    session.set_in_password(CANARY_WRONG)
    session.save()
    failed_run = runs.run_execute(run_id=runs.operation_run_now(operation=read).pk)
    response = client.post(reverse("mailsessions:session-test", args=[session.pk, "incoming"]))
    failed_test = services.connection_test_run(test_id=response.json()["id"])
    return {
        "session": session,
        "client": client,
        "failed_run": failed_run,
        "failed_test": failed_test,
        "pending_test": pending.json()["id"],
    }


@pytest.mark.django_db
def test_failures_say_why_without_the_password(leaky_world):
    run, test = leaky_world["failed_run"], leaky_world["failed_test"]
    assert run.status == RunStatus.FAILED and "authentication failed" in run.error
    assert test.status == "failed" and "authentication failed" in test.summary
    smtp = ConnectionTest.objects.filter(
        kind=ConnectionTestKind.OUTGOING, session__isnull=False
    ).get()
    assert smtp.status == "failed", smtp.summary
    for text in [run.error, test.summary, json.dumps(test.stages), smtp.summary]:
        assert not _leaks(text), text
    session = leaky_world["session"]
    session.refresh_from_db()
    assert not _leaks(session.last_test_summary + json.dumps(session.last_test_stages))


@pytest.mark.django_db
def test_no_password_in_logs_at_debug(leaky_world, caplog):
    records = caplog.get_records("setup") + caplog.records
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in records)
    # The wire logs were on: the IMAP conversation, LOGIN included, was captured.
    assert any(r.name.startswith("imapclient") and "LOGIN" in r.getMessage() for r in records)
    assert not _leaks(text)


@pytest.mark.django_db
def test_no_password_in_pages_admin_or_database(leaky_world, carol):
    session = leaky_world["session"]
    client = leaky_world["client"]
    pages = _app_pages(session)
    assert len(pages) >= 8
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert not _leaks(_body(response)), url
    staff = Client()
    staff.force_login(carol)
    for url in _admin_pages(session):
        response = staff.get(url)
        assert response.status_code == 200, url
        assert not _leaks(response.content), url
    dump = _database_dump()
    assert "mailsessions_mailsession" in dump and "wizard" in dump  # the dump saw the rows
    # The pending wizard test still holds its (encrypted) settings.
    assert ConnectionTest.objects.get(pk=leaky_world["pending_test"]).config_encrypted
    assert not _leaks(dump)


@pytest.mark.django_db
def test_no_password_in_repr_or_str(leaky_world):
    session = leaky_world["session"]
    session.set_in_password(CANARY_IN)
    objects = [
        session,
        session.incoming_config(),
        session.outgoing_config(),
        *ConnectionTest.objects.all(),
        *Operation.objects.all(),
        *Run.objects.all(),
    ]
    assert session.incoming_config().password == CANARY_IN  # it is there, just not shown
    for obj in objects:
        assert not _leaks(repr(obj) + str(obj)), type(obj)


# --- exception reports -----------------------------------------------------------


def _report(request, exc_info) -> str:
    reporter = ExceptionReporter(request, *exc_info)
    return reporter.get_traceback_html() + reporter.get_traceback_text()


def _use_decrypted(session: MailSession):
    config = session.incoming_config()  # what views, services and backends hold
    raise RuntimeError(f"failed talking to {config.describe()}")


@pytest.mark.django_db
def test_exception_report_of_a_frame_holding_the_decrypted_config(alice, settings):
    from django.test import RequestFactory

    settings.DEBUG = False  # the filter guards production reports
    session = make_session(alice)
    session.set_in_password(CANARY_IN)
    try:
        _use_decrypted(session)
    except RuntimeError:
        report = _report(RequestFactory().get("/"), sys.exc_info())
    assert "incoming_config" in report and "config" in report
    assert not _leaks(report)


@pytest.mark.django_db
def test_exception_report_of_the_login_form_hides_the_password(client, alice, settings):
    settings.DEBUG = False
    response = client.post(reverse("login"), {"username": "alice", "password": CANARY_IN})
    report = _report(response.wsgi_request, (RuntimeError, RuntimeError("x"), None))
    assert "username" in report and not _leaks(report)


@pytest.mark.django_db
def test_exception_report_of_a_wizard_post_hides_the_password(alice, settings):
    settings.DEBUG = False
    client = Client()
    client.force_login(alice)
    client.get(reverse("mailsessions:session-create"))
    post_step(client, Step.MODE, {"mode": Mode.READ})
    response = post_step(client, Step.INCOMING, {**INCOMING_IMAP, "in_password": CANARY_WIZARD})
    report = _report(response.wsgi_request, (RuntimeError, RuntimeError("x"), None))
    assert "incoming-in_host" in report
    assert not _leaks(report)


@pytest.mark.django_db
def test_exception_report_of_an_admin_password_change_hides_it(alice, carol, settings):
    settings.DEBUG = False
    session = make_session(alice)
    client = Client()
    client.force_login(carol)
    url = reverse("admin:mailsessions_mailsession_change", args=[session.pk])
    response = client.post(url, {"name": session.name, "new_in_password": CANARY_IN})
    report = _report(response.wsgi_request, (RuntimeError, RuntimeError("x"), None))
    assert not _leaks(report)


@pytest.mark.django_db
def test_exception_report_of_a_failed_save_hides_the_password(alice, settings):
    from django.core.exceptions import ValidationError
    from django.test import RequestFactory

    settings.DEBUG = False
    try:
        services.mail_session_save(
            owner=alice,
            name="Broken",
            mode=Mode.READ,
            incoming={"in_protocol": "imap", "in_encryption": "ssl", "in_host": "bad host"},
            outgoing=None,
            in_password=CANARY_IN,
        )
    except ValidationError:
        report = _report(RequestFactory().get("/"), sys.exc_info())
    assert "mail_session_save" in report
    assert not _leaks(report)


# --- broker messages ------------------------------------------------------------


@pytest.mark.django_db
def test_tasks_carry_ids_only(alice, django_capture_on_commit_callbacks):
    """What is published to the broker: the id and nothing else (read back
    from a real Redis queue)."""
    import redis

    from mailsessions.celery import app
    from tests.servers.worker import REDIS_URL, redis_available

    if not redis_available():
        pytest.skip("Redis is not running")
    session = make_session(alice)
    session.set_in_password(CANARY_IN)
    session.save()
    operation = _operation(session, OperationKind.READ)
    queue = f"security-{uuid.uuid4().hex[:8]}"
    previous = (app.conf.broker_url, app.conf.task_default_queue)
    app.conf.update(broker_url=REDIS_URL, task_default_queue=queue)
    store = redis.Redis.from_url(REDIS_URL)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            run = runs.operation_run_now(operation=operation)
            test = services.connection_test_start(
                owner=alice,
                kind=ConnectionTestKind.INCOMING,
                protocol="imap",
                config=session.incoming_config(),
                session=session,
            )
        raw = [json.loads(m) for m in store.lrange(queue, 0, -1)]
    finally:
        store.delete(queue)
        app.conf.update(broker_url=previous[0], task_default_queue=previous[1])
    assert len(raw) == 2, raw
    import base64

    by_task = {}
    for message in raw:
        body = json.loads(base64.b64decode(message["body"]))
        by_task[message["headers"]["task"]] = body[0]  # (args, kwargs, embed)
        assert body[1] == {}
        assert not _leaks(json.dumps(message)), message
    assert by_task == {
        "mailsessions.tasks.execute_run": [run.pk],
        "mailsessions.tasks.run_connection_test": [str(test.pk)],
    }
