"""Bad input, tried at random: every form and JSON endpoint alice can post to.

Each test starts from input that is valid, lets hypothesis replace some fields
with random text, 100 KB strings, control characters (NUL, CR, LF), numbers,
lists or nothing, and posts it through the test client. Whatever comes in:
no 500 (the test client re-raises any exception a view lets escape), errors
are attached to fields the form has (or JSON naming them), and nothing is
saved unless the response says it was.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import path, reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mailsessions.urls
from mailsessions import auth
from mailsessions.forms import FIELDS_BY_KIND, IncomingForm, OutgoingForm
from mailsessions.models import ConnectionTest, MailSession, Mode, Operation, OperationKind
from mailsessions.wizard import Step
from tests.factories import make_session
from tests.wizard_walk import INCOMING_IMAP, NEW_PREFIX, OUTGOING_SMTP, post_step, step_payload

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,  # no .hypothesis/ example store in the tree
)

HUGE = "x" * 100_000
CONTROL = ["\x00", "\r\n", "\n", "\r", "a\x00b", "ok\r\nBcc: evil@example.test", "\x1b[31m", "\t"]

# A single POST value of the wrong kind, size or content.
scalar = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    st.sampled_from(["", " ", HUGE, "0", "-1", "99999999999999999999", "1e9", "null", "[]"]),
    st.sampled_from(CONTROL),
    st.integers().map(str),
    st.text(max_size=20).map(lambda s: s + "\x00"),
)
# The test client sends a list as repeated keys (a form field given twice).
value = st.one_of(scalar, st.lists(scalar, min_size=0, max_size=3))


def mutations(fields: list[str]):
    return st.dictionaries(st.sampled_from(fields), value, min_size=1, max_size=len(fields))


def _counts() -> tuple[int, int, int]:
    return MailSession.objects.count(), Operation.objects.count(), ConnectionTest.objects.count()


def _form_errors(response) -> dict:
    form = response.context["form"]
    return dict(form.errors)


def _assert_errors_on_fields(errors: dict, fields) -> None:
    assert errors, "invalid input was neither saved nor explained"
    for name, messages in errors.items():
        assert name == "__all__" or name in fields, name
        assert all(str(m).strip() for m in messages)


@pytest.fixture(autouse=True)
def _no_test_rate_limit(settings):
    from django.core.cache import caches

    settings.MAILSESSIONS_TEST_RATE_PER_MINUTE = 100_000
    from django.core.cache.backends.db import DatabaseCache

    for cache in caches.all():
        if not isinstance(cache, DatabaseCache):
            cache.clear()


@pytest.fixture
def alice_c(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


# --- the wizard ------------------------------------------------------------------

INCOMING_FIELDS = [*IncomingForm.base_fields]
OUTGOING_FIELDS = [*OutgoingForm.base_fields]
VALID_OUTGOING = {**OUTGOING_SMTP, "out_username": "", "out_sender": ""}
URL_NEW = "/sessions/new/"


def _prefixed(step: str, data: dict) -> dict:
    return {
        f"{NEW_PREFIX}-current_step": step,
        **{f"{step}-{k}": v for k, v in data.items() if v is not None},
    }


def _valid(step: str) -> dict:
    base = {Step.INCOMING: INCOMING_IMAP, Step.OUTGOING: VALID_OUTGOING}[step]
    return {k: ("on" if v is True else v) for k, v in base.items() if v is not False}


def _start_wizard(client: Client, *upto: str) -> None:
    client.get(URL_NEW)
    post_step(client, Step.MODE, {"mode": Mode.READ_SEND})
    if Step.INCOMING in upto:
        assert post_step(client, Step.INCOMING, INCOMING_IMAP).status_code == 200
    if Step.OUTGOING in upto:
        assert post_step(client, Step.OUTGOING, OUTGOING_SMTP).status_code == 200


def test_wizard_unknown_current_step_is_not_a_500(alice_c):
    alice_c.get(URL_NEW)
    response = alice_c.post(URL_NEW, {f"{NEW_PREFIX}-current_step": "0", "mode-mode": ""})
    assert response.status_code in (200, 400)


@FUZZ
@given(mode=value, current=st.sampled_from([Step.MODE, Step.INCOMING, Step.OUTGOING, Step.REVIEW]))
def test_wizard_mode_step(alice_c, mode, current):
    before = _counts()
    alice_c.get(URL_NEW)
    response = alice_c.post(
        URL_NEW, {f"{NEW_PREFIX}-current_step": current, f"{Step.MODE}-mode": mode}
    )
    assert response.status_code in (200, 400), response.status_code
    assert _counts() == before


@FUZZ
@given(data=mutations(INCOMING_FIELDS))
def test_wizard_incoming_step(alice_c, data):
    _start_wizard(alice_c)
    before = _counts()
    response = alice_c.post(URL_NEW, _prefixed(Step.INCOMING, {**_valid(Step.INCOMING), **data}))
    assert response.status_code == 200
    assert _counts() == before
    if response.context["wizard"]["steps"].current == Step.INCOMING:
        _assert_errors_on_fields(_form_errors(response), INCOMING_FIELDS)


@FUZZ
@given(data=mutations(OUTGOING_FIELDS))
def test_wizard_outgoing_step(alice_c, data):
    _start_wizard(alice_c, Step.INCOMING)
    before = _counts()
    response = alice_c.post(URL_NEW, _prefixed(Step.OUTGOING, {**_valid(Step.OUTGOING), **data}))
    assert response.status_code == 200
    assert _counts() == before
    if response.context["wizard"]["steps"].current == Step.OUTGOING:
        _assert_errors_on_fields(_form_errors(response), OUTGOING_FIELDS)


@FUZZ
@given(name=value)
def test_wizard_review_step_saves_only_a_valid_name(alice_c, alice, name):
    MailSession.objects.filter(owner=alice).delete()
    _start_wizard(alice_c, Step.INCOMING, Step.OUTGOING)
    before = _counts()
    response = alice_c.post(URL_NEW, _prefixed(Step.REVIEW, {"name": name}))
    if response.status_code == 302:
        saved = MailSession.objects.get(owner=alice)
        assert _counts()[0] == before[0] + 1
        assert saved.name and "\x00" not in saved.name and len(saved.name) <= 100
    else:
        assert response.status_code == 200
        assert _counts() == before
        _assert_errors_on_fields(_form_errors(response), ["name"])


# --- the wizard's Test buttons and the saved session's --------------------------


@FUZZ
@given(
    kind=st.one_of(st.sampled_from(["incoming", "outgoing", "test_mail"]), scalar),
    step=st.sampled_from([Step.INCOMING, Step.OUTGOING]),
    data=st.one_of(mutations(INCOMING_FIELDS), mutations(OUTGOING_FIELDS)),
)
def test_wizard_test_button(alice_c, kind, step, data):
    _start_wizard(alice_c, Step.INCOMING)
    before = _counts()
    payload = {**_prefixed(step, {**_valid(step), **data}), "wizard_test": kind}
    response = alice_c.post(URL_NEW, payload)
    if response.status_code == 202:
        assert _counts() == (before[0], before[1], before[2] + 1)
        return
    if not kind:  # no button named: an ordinary step post
        assert response.status_code == 200
        assert _counts() == before
        return
    assert response.status_code == 400, (response.status_code, response.content[:300])
    assert _counts() == before
    body = response.json()
    if "errors" in body:
        _assert_errors_on_fields(body["errors"], INCOMING_FIELDS + OUTGOING_FIELDS)
    else:
        assert body["error"]


@FUZZ
@given(
    kind=st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=30
    ),
    body=st.dictionaries(st.text(max_size=10), value, max_size=3),
)
def test_session_test_endpoint(alice_c, alice, kind, body):
    session = MailSession.objects.filter(owner=alice).first() or make_session(alice)
    before = _counts()
    url = reverse("mailsessions:session-test", args=[session.pk, kind])
    response = alice_c.post(url, body)
    expected = 202 if kind in ("incoming", "outgoing", "test_mail") else 404
    assert response.status_code == expected
    assert _counts()[2] == before[2] + (1 if expected == 202 else 0)


# --- operations -------------------------------------------------------------------

SCHEDULE_FIELDS = [
    "schedule_kind",
    "every_minutes",
    "cron_minute",
    "cron_hour",
    "cron_day_of_month",
    "cron_month_of_year",
    "cron_day_of_week",
    "schedule_enabled",
]
VALID_OPERATION = {
    OperationKind.READ: {
        "name": "Read inbox",
        "folder": "INBOX",
        "after_read": "leave",
        "attachment_size_cap": "1048576",
        "schedule_kind": "none",
    },
    OperationKind.SEND: {
        "name": "Send",
        "send_to": "bob@example.test",
        "send_subject": "Hi",
        "reference_mode": "none",
        "schedule_kind": "none",
    },
    OperationKind.SET: {
        "name": "Mark",
        "set_action": "mark_read",
        "folder": "INBOX",
        "schedule_kind": "none",
    },
}


@pytest.mark.parametrize("kind", OperationKind.values)
def test_operation_forms(alice_c, alice, kind):
    session = make_session(alice)
    url = reverse("mailsessions:operation-create", args=[session.pk, kind])
    fields = FIELDS_BY_KIND[kind] + SCHEDULE_FIELDS
    # The valid base is valid, so that every rejection below is the mutation's.
    assert alice_c.post(url, VALID_OPERATION[kind]).status_code == 302
    Operation.objects.all().delete()

    @FUZZ
    @given(data=mutations(fields))
    def check(data):
        before = _counts()
        response = alice_c.post(url, {**VALID_OPERATION[kind], **data})
        if response.status_code == 302:
            assert _counts()[1] == before[1] + 1
            operation = Operation.objects.latest("id")
            for name in ("send_subject", "folder", "name", "move_to", "target_folder"):
                assert not any(c in getattr(operation, name) for c in "\r\n\x00"), name
            operation.delete()
        else:
            assert response.status_code == 200
            assert _counts() == before
            _assert_errors_on_fields(_form_errors(response), fields + ["add_attachment"])

    check()


# --- header injection: every Send Mail and test-mail header field ---------------

INJECTIONS = ["a@example.test\r\nBcc: evil@example.test", "Hi\nX-Evil: 1", "Hi\rthere", "Hi\x00"]


@pytest.mark.parametrize("injection", INJECTIONS)
@pytest.mark.parametrize(
    "field", ["send_to", "send_cc", "send_bcc", "send_reply_to", "send_subject"]
)
def test_send_mail_header_injection_is_refused(alice_c, alice, field, injection):
    session = make_session(alice)
    url = reverse("mailsessions:operation-create", args=[session.pk, "send"])
    response = alice_c.post(url, {**VALID_OPERATION[OperationKind.SEND], field: injection})
    assert response.status_code == 200
    assert field in _form_errors(response), _form_errors(response)
    assert Operation.objects.count() == 0


@pytest.mark.parametrize("injection", INJECTIONS)
@pytest.mark.parametrize("field", ["test_mail_to", "out_sender"])
def test_test_mail_header_injection_is_refused(alice_c, field, injection):
    # In the wizard step ...
    _start_wizard(alice_c, Step.INCOMING)
    response = alice_c.post(
        URL_NEW, _prefixed(Step.OUTGOING, {**_valid(Step.OUTGOING), field: injection})
    )
    assert field in _form_errors(response)
    # ... and through its Send test mail button.
    payload = step_payload(NEW_PREFIX, Step.OUTGOING, {**_valid(Step.OUTGOING), field: injection})
    response = alice_c.post(URL_NEW, {**payload, "wizard_test": "test_mail"})
    assert response.status_code == 400 and field in response.json()["errors"]
    assert ConnectionTest.objects.count() == 0


@pytest.mark.parametrize(
    "step,field", [(Step.INCOMING, "in_username"), (Step.OUTGOING, "out_username")]
)
def test_user_names_refuse_line_breaks(alice_c, step, field):
    _start_wizard(alice_c, Step.INCOMING)
    data = {**_valid(step), field: "alice\r\nA1 DELETE INBOX"}
    if step == Step.OUTGOING:
        data.update(out_use_different_credentials="on", out_password="pw", out_sender="a@b.test")
    response = alice_c.post(URL_NEW, _prefixed(step, data))
    assert field in _form_errors(response)


@FUZZ
@given(
    field=st.sampled_from(["send_to", "send_cc", "send_bcc", "send_reply_to", "send_subject"]),
    head=st.text(max_size=20),
    bad=st.sampled_from(["\r", "\n", "\x00", "\r\n"]),
    tail=st.text(max_size=20),
)
def test_send_mail_header_fields_never_keep_a_line_break(alice_c, alice, field, head, bad, tail):
    session = MailSession.objects.filter(owner=alice).first() or make_session(alice)
    url = reverse("mailsessions:operation-create", args=[session.pk, "send"])
    response = alice_c.post(url, {**VALID_OPERATION[OperationKind.SEND], field: head + bad + tail})
    if response.status_code == 302:
        # Only possible when the form stripped the character off an end.
        operation = Operation.objects.get()
        assert not any(c in getattr(operation, field) for c in "\r\n\x00")
        operation.delete()
    else:
        assert response.status_code == 200 and field in _form_errors(response)
        assert Operation.objects.count() == 0


# --- sign-in -------------------------------------------------------------------------

urlpatterns = [
    path("accounts/login/", auth.RateLimitedLoginView.as_view(), name="login"),
    *mailsessions.urls.urlpatterns,
]


@FUZZ
@given(
    username=value, password=value, extra=st.dictionaries(st.text(max_size=8), value, max_size=2)
)
def test_login_form(settings, alice, username, password, extra):
    settings.ROOT_URLCONF = __name__
    client = Client()
    response = client.post(
        "/accounts/login/", {**extra, "username": username, "password": password}
    )
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    _assert_errors_on_fields(_form_errors(response), ["username", "password"])
