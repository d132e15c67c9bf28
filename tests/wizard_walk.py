"""Drive the wizard through Django's test client, as formtools' own tests do."""

from __future__ import annotations

from django.urls import reverse

NEW_PREFIX = "mail_session_wizard_new"


def edit_prefix(pk: int) -> str:
    return f"mail_session_wizard_{pk}"


def step_payload(prefix: str, step: str, data: dict) -> dict:
    payload = {f"{prefix}-current_step": step}
    for key, value in data.items():
        if value is True:
            payload[f"{step}-{key}"] = "on"
        elif value is False or value is None:
            continue
        else:
            payload[f"{step}-{key}"] = value
    return payload


def post_step(client, step: str, data: dict, *, url: str | None = None, prefix: str = NEW_PREFIX):
    url = url or reverse("mailsessions:session-create")
    return client.post(url, step_payload(prefix, step, data))


def walk(
    client, steps: list[tuple[str, dict]], *, url: str | None = None, prefix: str = NEW_PREFIX
):
    """Post each step in order; returns the last response."""
    url = url or reverse("mailsessions:session-create")
    client.get(url)
    response = None
    for step, data in steps:
        response = post_step(client, step, data, url=url, prefix=prefix)
        assert response.status_code in (200, 302), response.status_code
        if (
            response.status_code == 200
            and response.context
            and response.context.get("form") is not None
        ):
            form = response.context["form"]
            if form.errors and form.prefix == step:
                raise AssertionError(f"step {step} rejected: {form.errors.as_json()}")
    return response


INCOMING_IMAP = {
    "in_protocol": "imap",
    "in_encryption": "ssl",
    "in_host": "imap.example.test",
    "in_port": "",
    "in_username": "alice@example.test",
    "in_password": "Imap-Pass-Plain-9917",
    "in_verify_certificate": True,
}

OUTGOING_SMTP = {
    "out_host": "smtp.example.test",
    "out_port": "",
    "out_encryption": "starttls",
    "out_verify_certificate": True,
    "test_mail_to": "bob@example.test",
}
