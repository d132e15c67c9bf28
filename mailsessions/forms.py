"""The wizard's step forms.

Each step form is a ModelForm over the fields it shows, but it applies only
the model's rules for its own part (``MailSession.incoming_errors`` /
``outgoing_errors``), so that the rules live in one place, the model, and a
step is never blamed for a field another step owns.
"""

from __future__ import annotations

import json

from django import forms
from django.core.exceptions import ValidationError
from django.forms.models import construct_instance

from mailsessions.models import DEFAULT_PORTS, MailSession, Mode


class PasswordField(forms.CharField):
    """Never re-rendered with its value; blank means "keep the stored one"."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", False)
        kwargs.setdefault("max_length", 1024)
        kwargs.setdefault(
            "widget",
            forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        )
        super().__init__(**kwargs)


class ModeForm(forms.Form):
    mode = forms.ChoiceField(
        label="Operation mode",
        choices=Mode.choices,
        widget=forms.RadioSelect,
        initial=Mode.READ_SEND,
        help_text="What this session will be used for. Only the settings it needs are asked next.",
    )


class PartForm(forms.ModelForm):
    """A ModelForm that validates one part (incoming or outgoing) of a session."""

    part: str = ""
    password_field: str = ""

    def __init__(self, *args, mode: str = Mode.READ_SEND, stored_password: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.mode = mode
        self.stored_password = stored_password
        for name, field in self.fields.items():
            field.widget.attrs.setdefault("id", f"id_{self.add_prefix(name)}")
        if self.password_field and stored_password:
            self.fields[
                self.password_field
            ].help_text = "A password is stored. Leave empty to keep it."

    def _post_clean(self) -> None:
        try:
            self.instance = construct_instance(self, self.instance, self._meta.fields)
            self.instance.mode = self.mode
            self.instance.clean_fields(exclude=self._get_validation_exclusions())
        except ValidationError as exc:
            self._update_errors(exc)
            return
        errors = getattr(self.instance, f"{self.part}_errors")()
        for field, messages in errors.items():
            for message in messages:
                if field in self.fields and field not in self.errors:
                    self.add_error(field, message)
                elif field not in self.fields:
                    self.add_error(None, message)

    def password_required(self) -> bool:
        return not self.stored_password


class IncomingForm(PartForm):
    part = "incoming"
    password_field = "in_password"

    in_password = PasswordField(label="Password")
    ews_endpoint = forms.URLField(
        label=MailSession._meta.get_field("ews_endpoint").verbose_name,
        help_text=MailSession._meta.get_field("ews_endpoint").help_text,
        required=False,
        assume_scheme="https",
    )

    class Meta:
        model = MailSession
        fields = [
            "in_protocol",
            "in_encryption",
            "in_allow_plaintext",
            "in_host",
            "in_port",
            "in_username",
            "in_verify_certificate",
            "ews_endpoint",
            "ews_auth_type",
            "ews_email",
        ]
        help_texts = {
            "in_port": "Filled in from protocol and encryption unless you type your own.",
            "in_username": "The login name, often your e-mail address.",
        }
        widgets = {
            "in_protocol": forms.RadioSelect,
            "in_encryption": forms.RadioSelect,
            "in_port": forms.NumberInput(attrs={"min": 1, "max": 65535}),
        }

    field_order = [
        "in_protocol",
        "in_encryption",
        "in_allow_plaintext",
        "in_host",
        "in_port",
        "in_username",
        "in_password",
        "in_verify_certificate",
        "ews_endpoint",
        "ews_auth_type",
        "ews_email",
    ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["in_protocol"].choices = self.fields["in_protocol"].choices[1:]
        self.fields["in_encryption"].choices = self.fields["in_encryption"].choices[1:]
        self.fields["in_port"].widget.attrs["data-default-ports"] = _ports_json()
        self.fields["ews_auth_type"].choices = self.fields["ews_auth_type"].choices[1:]
        self.fields["ews_auth_type"].required = False

    def clean(self):
        data = super().clean()
        if not data.get("in_password") and self.password_required():
            self.add_error("in_password", "Enter the password of the user account.")
        return data


class OutgoingForm(PartForm):
    part = "outgoing"
    password_field = "out_password"

    out_password = PasswordField(label="Password")

    class Meta:
        model = MailSession
        fields = [
            "out_host",
            "out_port",
            "out_encryption",
            "out_allow_plaintext",
            "out_verify_certificate",
            "out_use_different_credentials",
            "out_no_auth",
            "out_username",
            "out_sender",
            "test_mail_to",
        ]
        widgets = {
            "out_encryption": forms.RadioSelect,
            "out_port": forms.NumberInput(attrs={"min": 1, "max": 65535}),
        }
        help_texts = {
            "out_port": "587 for STARTTLS, 465 for SSL/TLS, unless your provider says otherwise.",
            "out_use_different_credentials": "Log in to the SMTP server with another user name and password than the incoming account.",
            "out_no_auth": "The server accepts mail without a password (e.g. an internal relay). Only a user name is sent.",
            "test_mail_to": "Where “Send test mail” delivers a test message.",
        }

    field_order = [
        "out_host",
        "out_port",
        "out_encryption",
        "out_allow_plaintext",
        "out_verify_certificate",
        "out_use_different_credentials",
        "out_no_auth",
        "out_username",
        "out_password",
        "out_sender",
        "test_mail_to",
    ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["out_encryption"].choices = self.fields["out_encryption"].choices[1:]
        self.fields["out_port"].widget.attrs["data-default-ports"] = _ports_json()
        if self.mode == Mode.SEND:
            # Nothing to differ from: the SMTP account is the only account.
            self.fields["out_use_different_credentials"].widget = forms.HiddenInput()
            self.fields["out_username"].label = "User account"

    def password_required(self) -> bool:
        data = self.cleaned_data
        if data.get("out_no_auth") or self.stored_password:
            return False
        return self.mode == Mode.SEND or bool(data.get("out_use_different_credentials"))

    def clean(self):
        data = super().clean()
        if data.get("out_no_auth") and data.get("out_password"):
            self.add_error(
                "out_password", "With “Use no authentication” no password is sent: leave it empty."
            )
        elif not data.get("out_password") and self.password_required():
            self.add_error("out_password", "Enter the password for the SMTP server.")
        return data


class ReviewForm(forms.Form):
    name = forms.CharField(
        label="Session name",
        max_length=100,
        help_text="How this session is listed, e.g. “Support inbox”.",
    )

    def __init__(self, *args, owner=None, instance_pk=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner
        self.instance_pk = instance_pk

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise ValidationError("Enter a name for the session.")
        taken = MailSession.objects.filter(owner=self.owner, name=name).exclude(pk=self.instance_pk)
        if self.owner is not None and taken.exists():
            raise ValidationError("You already have a session with this name.")
        return name


def _ports_json() -> str:
    return json.dumps({f"{p}:{e}": port for (p, e), port in DEFAULT_PORTS.items()})
