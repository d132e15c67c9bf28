"""The wizard's step forms.

Each step form is a ModelForm over the fields it shows, but it applies only
the model's rules for its own part (``MailSession.incoming_errors`` /
``outgoing_errors``), so that the rules live in one place, the model, and a
step is never blamed for a field another step owns.
"""

from __future__ import annotations

import json

from django import forms
from django.conf import settings
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
        add_model_errors(self, getattr(self.instance, f"{self.part}_errors")())

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
            "out_via_ews",
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
        "out_via_ews",
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
        if self.mode != Mode.READ_SEND or self.instance.in_protocol != "ews":
            self.fields["out_via_ews"].widget = forms.HiddenInput()
        if self.mode == Mode.SEND:
            # Nothing to differ from: the SMTP account is the only account.
            self.fields["out_use_different_credentials"].widget = forms.HiddenInput()
            self.fields["out_username"].label = "User account"

    def password_required(self) -> bool:
        data = self.cleaned_data
        if data.get("out_via_ews") or data.get("out_no_auth") or self.stored_password:
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


def add_model_errors(form: forms.BaseForm, errors: dict[str, list[str]]) -> None:
    """Put the model's errors on the form: on the field when the form shows
    it (once), otherwise as a form-wide error, so none is lost."""
    for field, messages in errors.items():
        for message in messages:
            if field in form.fields:
                if field not in form.errors:
                    form.add_error(field, message)
            else:
                form.add_error(None, message)


# --- operations ---------------------------------------------------------------

# Which messages Read Mail and Set Mail select (Set may use a run instead).
SELECTION_FIELDS = [
    "folder",
    "unseen_only",
    "from_contains",
    "to_contains",
    "subject_contains",
    "since",
    "before",
    "larger_than",
    "max_count",
    "newest_first",
]
READ_FIELDS = [
    "name",
    *SELECTION_FIELDS,
    "after_read",
    "move_to",
    "save_attachments",
    "attachment_size_cap",
]
SEND_FIELDS = [
    "name",
    "send_to",
    "send_cc",
    "send_bcc",
    "send_reply_to",
    "send_subject",
    "send_text_body",
    "send_html_body",
    "send_individually",
    "reference_mode",
    "reference_message",
]
SET_FIELDS = [
    "name",
    "set_action",
    "target_folder",
    "create_folder",
    "source_run",
    *SELECTION_FIELDS,
]
FIELDS_BY_KIND = {"read": READ_FIELDS, "send": SEND_FIELDS, "set": SET_FIELDS}


class OperationForm(forms.ModelForm):
    """Base for the per-kind operation forms (see ``operation_form_class``).

    Adds the schedule (none, every N minutes, or a crontab), stored by
    django-celery-beat, and applies the model's rules (mode, protocol).
    """

    schedule_kind = forms.ChoiceField(
        label="Schedule",
        choices=[
            ("none", "Run only when I press Run now"),
            ("interval", "Every N minutes"),
            ("crontab", "Crontab"),
        ],
        initial="none",
        widget=forms.RadioSelect,
    )
    every_minutes = forms.IntegerField(
        label="Every (minutes)", min_value=1, max_value=60 * 24 * 31, required=False
    )
    cron_minute = forms.CharField(label="Minute", initial="*/15", max_length=60, required=False)
    cron_hour = forms.CharField(label="Hour", initial="*", max_length=60, required=False)
    cron_day_of_month = forms.CharField(
        label="Day of month", initial="*", max_length=60, required=False
    )
    cron_month_of_year = forms.CharField(label="Month", initial="*", max_length=60, required=False)
    cron_day_of_week = forms.CharField(
        label="Day of week", initial="*", max_length=60, required=False
    )
    schedule_enabled = forms.BooleanField(label="Schedule enabled", initial=True, required=False)

    def __init__(self, *args, session, kind, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.instance.session = session
        self.instance.kind = kind
        self.session = session
        if "reference_message" in self.fields:
            self.fields["reference_message"].queryset = session.messages.order_by("-created")
        if kind == "send":
            self.fields["add_attachment"] = forms.FileField(
                label="Add an attachment",
                required=False,
                help_text="Attached to every message this operation sends "
                f"(at most {settings.MAILSESSIONS_MAX_UPLOAD_SIZE // (1024 * 1024)} MB).",
            )
        if "source_run" in self.fields:
            from mailsessions.models import Run

            self.fields["source_run"].queryset = Run.objects.filter(operation__session=session)
        if self.instance.pk:
            from mailsessions.runs import schedule_of

            schedule = schedule_of(self.instance)
            self.initial.update(
                schedule_kind=schedule.kind,
                every_minutes=schedule.every_minutes,
                cron_minute=schedule.minute,
                cron_hour=schedule.hour,
                cron_day_of_month=schedule.day_of_month,
                cron_month_of_year=schedule.month_of_year,
                cron_day_of_week=schedule.day_of_week,
                schedule_enabled=schedule.enabled,
            )

    def _post_clean(self) -> None:
        try:
            self.instance = construct_instance(self, self.instance, self._meta.fields)
            self.instance.full_clean(
                exclude=self._get_validation_exclusions() - {"kind"}, validate_unique=False
            )
        except ValidationError as exc:
            add_model_errors(self, exc.message_dict)

    def clean_add_attachment(self):
        upload = self.cleaned_data.get("add_attachment")
        if upload and upload.size > settings.MAILSESSIONS_MAX_UPLOAD_SIZE:
            raise ValidationError(
                f"The file is {upload.size // 1024} KB; at most "
                f"{settings.MAILSESSIONS_MAX_UPLOAD_SIZE // 1024} KB can be attached."
            )
        if upload:
            from mailsessions.validators import validate_no_header_injection

            validate_no_header_injection(upload.name)
        return upload

    def clean(self):
        data = super().clean()
        kind = data.get("schedule_kind")
        if kind == "interval" and not data.get("every_minutes"):
            self.add_error("every_minutes", "Enter how many minutes apart the runs are.")
        if kind == "crontab":
            from django_celery_beat.validators import (
                day_of_month_validator,
                day_of_week_validator,
                hour_validator,
                minute_validator,
                month_of_year_validator,
            )

            checks = {
                "cron_minute": minute_validator,
                "cron_hour": hour_validator,
                "cron_day_of_month": day_of_month_validator,
                "cron_month_of_year": month_of_year_validator,
                "cron_day_of_week": day_of_week_validator,
            }
            for field, validator in checks.items():
                value = (data.get(field) or "").strip() or "*"
                try:
                    validator(value)
                except ValidationError as exc:
                    self.add_error(field, exc.messages[0] if exc.messages else "Invalid value.")
                data[field] = value
        return data

    def schedule(self):
        from mailsessions.runs import Schedule

        data = self.cleaned_data
        return Schedule(
            kind=data["schedule_kind"],
            every_minutes=data.get("every_minutes"),
            minute=data.get("cron_minute") or "*",
            hour=data.get("cron_hour") or "*",
            day_of_month=data.get("cron_day_of_month") or "*",
            month_of_year=data.get("cron_month_of_year") or "*",
            day_of_week=data.get("cron_day_of_week") or "*",
            enabled=data.get("schedule_enabled", False),
        )


def operation_form_class(kind: str) -> type[OperationForm]:
    from django.forms import modelform_factory

    from mailsessions.models import Operation

    return modelform_factory(
        Operation,
        form=OperationForm,
        fields=FIELDS_BY_KIND[kind],
        widgets={
            "send_text_body": forms.Textarea(attrs={"rows": 8}),
            "send_html_body": forms.Textarea(attrs={"rows": 6}),
            "send_to": forms.TextInput(),
            "send_cc": forms.TextInput(),
            "send_bcc": forms.TextInput(),
            "send_reply_to": forms.TextInput(),
            "since": forms.DateInput(attrs={"type": "date"}),
            "before": forms.DateInput(attrs={"type": "date"}),
        },
    )
