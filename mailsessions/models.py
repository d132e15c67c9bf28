"""Mail sessions and what happens to them.

Passwords are stored only as Fernet tokens (``*_password_encrypted``) and are
decrypted only where a backend is about to use them (``incoming_config()`` /
``outgoing_config()``).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models
from django.urls import reverse
from django.views.decorators.debug import sensitive_variables

from mailsessions import crypto
from mailsessions.backends.base import Security, ServerConfig
from mailsessions.validators import (
    port_validators,
    validate_address_list,
    validate_host,
    validate_no_header_injection,
)


class Mode(models.TextChoices):
    READ_SEND = "read_send", "Read and send mails"
    READ = "read", "Read mails from inbox"
    SEND = "send", "Send mails via SMTP"


class IncomingProtocol(models.TextChoices):
    IMAP = "imap", "IMAP"
    EWS = "ews", "Exchange (EWS)"
    POP3 = "pop3", "POP3"


class Encryption(models.TextChoices):
    SSL = "ssl", "SSL/TLS"
    STARTTLS = "starttls", "STARTTLS"
    NONE = "none", "None (unencrypted)"


class EWSAuthType(models.TextChoices):
    NTLM = "NTLM", "NTLM"
    BASIC = "basic", "Basic"
    DIGEST = "digest", "Digest"


# (protocol, encryption) -> port the wizard proposes and the model fills in
# when the field is left blank.
DEFAULT_PORTS: dict[tuple[str, str], int] = {
    ("imap", "ssl"): 993,
    ("imap", "starttls"): 143,
    ("imap", "none"): 143,
    ("pop3", "ssl"): 995,
    ("pop3", "starttls"): 110,
    ("pop3", "none"): 110,
    ("ews", "ssl"): 443,
    ("ews", "starttls"): 443,
    ("ews", "none"): 80,
    ("smtp", "ssl"): 465,
    ("smtp", "starttls"): 587,
    ("smtp", "none"): 587,
}


def default_port(protocol: str, encryption: str) -> int:
    return DEFAULT_PORTS.get((protocol, encryption), 143)


class TestOutcome(models.TextChoices):
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"


class MailSessionQuerySet(models.QuerySet):
    def owned_by(self, user) -> MailSessionQuerySet:
        return self.filter(owner=user)


class MailSession(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_sessions"
    )
    name = models.CharField(max_length=100)
    mode = models.CharField(
        "Operation mode", max_length=20, choices=Mode.choices, default=Mode.READ_SEND
    )

    # Incoming mail
    in_protocol = models.CharField(
        "Protocol", max_length=10, choices=IncomingProtocol.choices, blank=True
    )
    in_encryption = models.CharField(
        "Encryption", max_length=10, choices=Encryption.choices, blank=True
    )
    in_allow_plaintext = models.BooleanField(
        "Allow unencrypted connection",
        default=False,
        help_text="Sends the password in clear text. Only for test servers on a trusted network.",
    )
    in_host = models.CharField("Server address", max_length=253, blank=True)
    in_port = models.PositiveIntegerField(
        "Server Port", null=True, blank=True, validators=port_validators
    )
    in_username = models.CharField("User account", max_length=254, blank=True)
    in_password_encrypted = models.TextField(blank=True, editable=False)
    in_verify_certificate = models.BooleanField("Verify the server certificate", default=True)
    ews_endpoint = models.URLField(
        "EWS service endpoint",
        blank=True,
        help_text="e.g. https://mail.example.org/EWS/Exchange.asmx. Leave empty to use autodiscover.",
    )
    ews_auth_type = models.CharField(
        "Exchange authentication", max_length=10, choices=EWSAuthType.choices, blank=True
    )
    ews_email = models.EmailField(
        "Mailbox address",
        blank=True,
        help_text="The primary e-mail address of the Exchange mailbox.",
    )

    # Outgoing mail
    out_host = models.CharField("SMTP server address", max_length=253, blank=True)
    out_port = models.PositiveIntegerField(
        "SMTP Server Port", null=True, blank=True, validators=port_validators
    )
    out_encryption = models.CharField(
        "Encryption", max_length=10, choices=Encryption.choices, blank=True
    )
    out_allow_plaintext = models.BooleanField(
        "Allow unencrypted connection",
        default=False,
        help_text="Sends mail and any password in clear text. Only for trusted networks.",
    )
    out_verify_certificate = models.BooleanField("Verify the server certificate", default=True)
    out_via_ews = models.BooleanField(
        "Send through Exchange (EWS)",
        default=False,
        help_text="Send with the Exchange account of the incoming settings instead of an SMTP server.",
    )
    out_use_different_credentials = models.BooleanField("Use Different Credentials", default=False)
    out_no_auth = models.BooleanField("Use no authentication", default=False)
    out_username = models.CharField("User name", max_length=254, blank=True)
    out_password_encrypted = models.TextField(blank=True, editable=False)
    out_sender = models.EmailField(
        "Sender address",
        blank=True,
        help_text="The From address of mails sent with this session. Defaults to the user account.",
    )
    test_mail_to = models.EmailField("Send test mail to", blank=True)

    # The latest connection test (see services.connection_test_record)
    last_test_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_test_outcome = models.CharField(
        max_length=10, choices=TestOutcome.choices, blank=True, editable=False
    )
    last_test_summary = models.CharField(max_length=500, blank=True, editable=False)
    last_test_stages = models.JSONField(default=list, blank=True, editable=False)

    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField("Last change", auto_now=True)

    objects = MailSessionQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="unique_session_name_per_owner")
        ]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<MailSession {self.pk} {self.name!r} {self.mode}>"

    def get_absolute_url(self) -> str:
        return reverse("mailsessions:session-detail", args=[self.pk])

    # --- what the mode allows ---------------------------------------------

    @property
    def reads(self) -> bool:
        return self.mode in (Mode.READ_SEND, Mode.READ)

    @property
    def sends(self) -> bool:
        return self.mode in (Mode.READ_SEND, Mode.SEND)

    @property
    def out_has_own_credentials(self) -> bool:
        """SMTP uses its own user name: always for send-only sessions."""
        return self.mode == Mode.SEND or self.out_use_different_credentials

    @property
    def verification_off(self) -> bool:
        return (self.reads and not self.in_verify_certificate) or (
            self.sends and not self.out_verify_certificate
        )

    @property
    def has_in_password(self) -> bool:
        return bool(self.in_password_encrypted)

    @property
    def has_out_password(self) -> bool:
        return bool(self.out_password_encrypted)

    # --- credentials ------------------------------------------------------

    @sensitive_variables("plaintext")
    def set_in_password(self, plaintext: str) -> None:
        self.in_password_encrypted = crypto.encrypt(plaintext)

    @sensitive_variables("plaintext")
    def set_out_password(self, plaintext: str) -> None:
        self.out_password_encrypted = crypto.encrypt(plaintext)

    # --- validation -------------------------------------------------------

    INCOMING_FIELDS = (
        "in_protocol",
        "in_encryption",
        "in_host",
        "in_port",
        "in_username",
        "ews_endpoint",
        "ews_auth_type",
        "ews_email",
    )
    OUTGOING_FIELDS = (
        "out_host",
        "out_port",
        "out_encryption",
        "out_username",
        "out_sender",
        "test_mail_to",
    )

    def clean(self) -> None:
        errors = {**self.incoming_errors()}
        for field, messages in self.outgoing_errors().items():
            errors.setdefault(field, []).extend(messages)
        if errors:
            raise ValidationError(errors)

    def incoming_errors(self) -> dict[str, list[str]]:
        """The rules for the incoming settings, as field -> messages.

        Kept apart from ``outgoing_errors`` so that each wizard step can apply
        exactly the model's rules for the fields it shows.
        """
        errors: dict[str, list[str]] = {}

        def add(field: str, message: str) -> None:
            errors.setdefault(field, []).append(message)

        if not self.reads:
            for field in self.INCOMING_FIELDS:
                if getattr(self, field) not in ("", None):
                    add(field, "A send-only session has no incoming mail settings.")
            if self.in_password_encrypted:
                add("in_protocol", "A send-only session has no incoming mail settings.")
            return errors
        if not self.in_protocol:
            add("in_protocol", "Choose the protocol of the incoming mail server.")
        if not self.in_encryption:
            add("in_encryption", "Choose how the connection is encrypted.")
        elif self.in_encryption == Encryption.NONE and not self.in_allow_plaintext:
            add(
                "in_encryption",
                "An unencrypted connection sends your password in clear text: "
                "tick “Allow unencrypted connection” to confirm.",
            )
        uses_endpoint = self.in_protocol == IncomingProtocol.EWS and self.ews_endpoint
        if not self.in_host and not uses_endpoint:
            add("in_host", "Enter the server address.")
        if not self.in_username:
            add("in_username", "Enter the user account.")
        self._check_no_breaks("in_username", add)
        if self.in_protocol == IncomingProtocol.EWS:
            if not self.ews_auth_type:
                add("ews_auth_type", "Choose how to authenticate with Exchange.")
            if not self.ews_email and "@" not in self.in_username:
                add(
                    "ews_email",
                    "Enter the mailbox address (needed when the user account is not an e-mail address).",
                )
        self._check_host("in_host", add)
        self._check_email("ews_email", add)
        return errors

    def outgoing_errors(self) -> dict[str, list[str]]:
        """The rules for the outgoing (SMTP) settings, as field -> messages."""
        errors: dict[str, list[str]] = {}

        def add(field: str, message: str) -> None:
            errors.setdefault(field, []).append(message)

        if not self.sends:
            for field in self.OUTGOING_FIELDS:
                if getattr(self, field) not in ("", None):
                    add(field, "A read-only session has no outgoing mail settings.")
            if (
                self.out_password_encrypted
                or self.out_use_different_credentials
                or self.out_no_auth
            ):
                add("out_host", "A read-only session has no outgoing mail settings.")
            return errors
        if self.out_via_ews:
            if self.mode != Mode.READ_SEND or self.in_protocol != IncomingProtocol.EWS:
                add(
                    "out_via_ews",
                    "Only a read-and-send Exchange (EWS) session can send through Exchange.",
                )
            self._check_email("out_sender", add)
            self._check_email("test_mail_to", add)
            if "out_sender" not in errors and not self.sender_address():
                add(
                    "out_sender",
                    "Enter the sender address: the user name is not an e-mail address.",
                )
            return errors
        if not self.out_host:
            add("out_host", "Enter the SMTP server address.")
        if not self.out_encryption:
            add("out_encryption", "Choose how the connection is encrypted.")
        elif self.out_encryption == Encryption.NONE and not self.out_allow_plaintext:
            add(
                "out_encryption",
                "An unencrypted connection sends mail and passwords in clear text: "
                "tick “Allow unencrypted connection” to confirm.",
            )
        if self.out_no_auth and self.out_use_different_credentials:
            add(
                "out_no_auth",
                "Choose either “Use Different Credentials” or “Use no authentication”, not both.",
            )
        elif self.out_no_auth and not self.out_username:
            add(
                "out_username",
                "Enter the user name: with no authentication it is still sent to the server.",
            )
        elif self.out_has_own_credentials and not self.out_username:
            add("out_username", "Enter the user name for the SMTP server.")
        self._check_host("out_host", add)
        self._check_no_breaks("out_username", add)
        self._check_email("out_sender", add)
        self._check_email("test_mail_to", add)
        if "out_sender" not in errors and not self.sender_address():
            add("out_sender", "Enter the sender address: the user name is not an e-mail address.")
        return errors

    def _check_no_breaks(self, field: str, add) -> None:
        # A line break in a user name would be sent as a second protocol command.
        try:
            validate_no_header_injection(getattr(self, field))
        except ValidationError as exc:
            add(field, exc.messages[0])

    def _check_host(self, field: str, add) -> None:
        value = getattr(self, field)
        if value:
            try:
                validate_host(value)
            except ValidationError as exc:
                for message in exc.messages:
                    add(field, message)

    def _check_email(self, field: str, add) -> None:
        value = getattr(self, field)
        if value:
            try:
                validate_email(value)
            except ValidationError:
                add(field, "Enter a valid e-mail address.")

    def save(self, *args, **kwargs) -> None:
        if self.reads and self.in_port is None and self.in_protocol and self.in_encryption:
            self.in_port = default_port(self.in_protocol, self.in_encryption)
        if self.sends and self.out_port is None and self.out_encryption:
            self.out_port = default_port("smtp", self.out_encryption)
        super().save(*args, **kwargs)

    # --- use --------------------------------------------------------------

    def sender_address(self) -> str:
        if self.out_sender:
            return self.out_sender
        own = self.out_username if self.out_has_own_credentials or self.out_no_auth else ""
        for candidate in (own, self.in_username, self.ews_email):
            if candidate and "@" in candidate:
                return candidate
        return ""

    def incoming_config(self) -> ServerConfig:
        """The incoming server with the password decrypted, for a backend to use now."""
        return ServerConfig(
            host=self.in_host,
            port=self.in_port or default_port(self.in_protocol, self.in_encryption),
            security=Security(self.in_encryption),
            username=self.in_username,
            password=crypto.decrypt(self.in_password_encrypted),
            verify_certificate=self.in_verify_certificate,
            timeout=settings.MAILSESSIONS_NETWORK_TIMEOUT,
            ews_endpoint=self.ews_endpoint,
            ews_auth_type=self.ews_auth_type or EWSAuthType.NTLM,
            email_address=self.ews_email or (self.in_username if "@" in self.in_username else ""),
        )

    @property
    def outgoing_protocol(self) -> str:
        return IncomingProtocol.EWS.value if self.out_via_ews else "smtp"

    @sensitive_variables("password")
    def outgoing_config(self) -> ServerConfig:
        """The SMTP server with the right credentials decrypted, for use now."""
        if self.out_via_ews:
            return self.incoming_config()
        if self.out_no_auth:
            username, password = "", ""
        elif self.out_has_own_credentials:
            username, password = self.out_username, crypto.decrypt(self.out_password_encrypted)
        else:
            username, password = self.in_username, crypto.decrypt(self.in_password_encrypted)
        return ServerConfig(
            host=self.out_host,
            port=self.out_port or default_port("smtp", self.out_encryption),
            security=Security(self.out_encryption),
            username=username,
            password=password,
            verify_certificate=self.out_verify_certificate,
            timeout=settings.MAILSESSIONS_NETWORK_TIMEOUT,
        )

    @property
    def incoming_protocol_label(self) -> str:
        return self.get_in_protocol_display() if self.reads else "—"

    @property
    def server_summary(self) -> str:
        parts = []
        if self.reads:
            parts.append(f"{self.in_host or self.ews_endpoint}:{self.in_port or ''}".rstrip(":"))
        if self.sends and self.out_via_ews:
            parts.append("via Exchange")
        elif self.sends:
            parts.append(f"{self.out_host}:{self.out_port or ''}".rstrip(":"))
        return " · ".join(parts)


class TestKind(models.TextChoices):
    INCOMING = "incoming", "Incoming mail"
    OUTGOING = "outgoing", "Outgoing mail"
    TEST_MAIL = "test_mail", "Test mail"


class TestStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"


class ConnectionTest(models.Model):
    """One run of the staged connection test or of the test mail.

    The worker needs the credentials of a possibly unsaved wizard step. They
    travel as ``config_encrypted`` (a Fernet token of the server settings),
    never through the broker: the task gets only this row's id, and the token
    is wiped as soon as the test has run.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    session = models.ForeignKey(
        MailSession, null=True, blank=True, on_delete=models.CASCADE, related_name="tests"
    )
    kind = models.CharField(max_length=20, choices=TestKind.choices)
    status = models.CharField(max_length=10, choices=TestStatus.choices, default=TestStatus.QUEUED)
    config_encrypted = models.TextField(blank=True, editable=False)
    target = models.CharField(max_length=300, blank=True)
    stages = models.JSONField(default=list, blank=True)
    summary = models.CharField(max_length=500, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} test of {self.target}"

    def __repr__(self) -> str:
        return f"<ConnectionTest {self.pk} {self.kind} {self.status}>"

    @property
    def done(self) -> bool:
        return self.status in (TestStatus.PASSED, TestStatus.FAILED)


# --- operations and runs -------------------------------------------------------
# What a user asks a session to do (Operation), each execution of it (Run) and
# the mail Read Mail stored (StoredMessage, StoredAttachment). The service that
# runs a Read is mailsessions.reading.operation_read.

MB = 1024 * 1024


class OperationKind(models.TextChoices):
    READ = "read", "Read Mail"
    SEND = "send", "Send Mail"
    SET = "set", "Set Mail"


class AfterRead(models.TextChoices):
    LEAVE = "leave", "Leave on the server"
    MARK_READ = "mark_read", "Mark as read"
    MOVE = "move", "Move to a folder"
    DELETE = "delete", "Delete from the server"


# What each incoming protocol can do after reading; POP3 has no flags or folders.
AFTER_READ_BY_PROTOCOL: dict[str, frozenset[str]] = {
    IncomingProtocol.POP3: frozenset({AfterRead.LEAVE, AfterRead.DELETE}),
}


class ReferenceMode(models.TextChoices):
    NONE = "none", "New message"
    REPLY = "reply", "Reply to a stored message"
    FORWARD = "forward", "Forward a stored message"


class SetAction(models.TextChoices):
    MARK_READ = "mark_read", "Mark as read"
    MARK_UNREAD = "mark_unread", "Mark as unread"
    FLAG = "flag", "Flag"
    UNFLAG = "unflag", "Remove flag"
    MOVE = "move", "Move to folder"
    COPY = "copy", "Copy to folder"
    DELETE = "delete", "Delete"


# What Set Mail can do per incoming protocol; POP3 can only delete.
SET_ACTIONS_BY_PROTOCOL: dict[str, frozenset[str]] = {
    IncomingProtocol.POP3: frozenset({SetAction.DELETE}),
}


class Operation(models.Model):
    """A named, reusable mail operation of a session (Read, Send or Set Mail).

    The Read parameters are real columns so that they are validated, typed
    and queryable; ``clean()`` checks them against the session's mode and
    protocol.
    """

    session = models.ForeignKey(MailSession, on_delete=models.CASCADE, related_name="operations")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=OperationKind.choices)

    # Read Mail: which messages
    folder = models.CharField(max_length=255, default="INBOX")
    unseen_only = models.BooleanField("Only unread messages", default=False)
    from_contains = models.CharField("From contains", max_length=254, blank=True)
    to_contains = models.CharField("To contains", max_length=254, blank=True)
    subject_contains = models.CharField("Subject contains", max_length=255, blank=True)
    since = models.DateField("Received on or after", null=True, blank=True)
    before = models.DateField("Received before", null=True, blank=True)
    larger_than = models.PositiveIntegerField("Larger than (bytes)", null=True, blank=True)
    max_count = models.PositiveIntegerField("At most this many messages", null=True, blank=True)
    newest_first = models.BooleanField("Newest first", default=False)
    # Read Mail: what then
    after_read = models.CharField(
        "After reading", max_length=10, choices=AfterRead.choices, default=AfterRead.LEAVE
    )
    move_to = models.CharField("Move to folder", max_length=255, blank=True)
    save_attachments = models.BooleanField(default=True)
    attachment_size_cap = models.PositiveIntegerField(
        "Largest attachment to store (bytes)", default=25 * MB
    )

    # Send Mail (addresses are comma-separated; see validators)
    send_to = models.TextField("To", blank=True, validators=[validate_address_list])
    send_cc = models.TextField("Cc", blank=True, validators=[validate_address_list])
    send_bcc = models.TextField("Bcc", blank=True, validators=[validate_address_list])
    send_reply_to = models.TextField("Reply-To", blank=True, validators=[validate_address_list])
    send_subject = models.CharField(
        "Subject", max_length=998, blank=True, validators=[validate_no_header_injection]
    )
    send_text_body = models.TextField("Text body", blank=True)
    send_html_body = models.TextField("HTML body", blank=True)
    send_individually = models.BooleanField(
        "One message per recipient",
        default=False,
        help_text="Send a separate message to each To address (Cc and Bcc get every message).",
    )
    reference_mode = models.CharField(
        "Reply or forward", max_length=10, choices=ReferenceMode.choices, default=ReferenceMode.NONE
    )
    reference_message = models.ForeignKey(
        "StoredMessage",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name="Stored message to reply to or forward",
    )

    # Set Mail: selects with the Read filters above (or a run's messages), then acts
    set_action = models.CharField("Action", max_length=12, choices=SetAction.choices, blank=True)
    target_folder = models.CharField("Target folder", max_length=255, blank=True)
    create_folder = models.BooleanField("Create the target folder if missing", default=False)
    source_run = models.ForeignKey(
        "Run",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name="Only the messages stored by this run",
    )

    # Schedule: a django-celery-beat task that beat runs (see services in runs.py)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="mail_operation",
        editable=False,
    )

    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField("Last change", auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("mailsessions:operation-detail", args=[self.pk])

    def __repr__(self) -> str:
        return f"<Operation {self.pk} {self.name!r} {self.kind}>"

    def mode_refusal(self) -> str:
        """Why the session's mode forbids this operation, or "" when it allows it.

        One sentence naming the mode, used by the model, the forms and the
        services that run operations.
        """
        session = self.session
        mode = f"({session.get_mode_display()})"
        if self.kind == OperationKind.SEND:
            if not session.sends:
                return f"“{session.name}” is a read-only session {mode}: it cannot send mail."
        elif not session.reads or not session.in_protocol:
            verb = "read" if self.kind == OperationKind.READ else "change"
            return f"“{session.name}” is a send-only session {mode}: it cannot {verb} mail."
        return ""

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}

        def add(field: str, message: str) -> None:
            errors.setdefault(field, []).append(message)

        session = self.session if self.session_id else None
        if session is not None and (refusal := self.mode_refusal()):
            add("kind", refusal)
        if self.kind == OperationKind.READ:
            protocol = session.in_protocol if session is not None else ""
            allowed = AFTER_READ_BY_PROTOCOL.get(protocol)
            if allowed is not None and self.after_read not in allowed:
                add(
                    "after_read",
                    f"{session.get_in_protocol_display()} can only leave or delete messages "
                    f"after reading; “{AfterRead(self.after_read).label}” needs IMAP or Exchange.",
                )
            elif self.after_read == AfterRead.MOVE and not self.move_to.strip():
                add("move_to", "Enter the folder to move read messages to.")
            if protocol == IncomingProtocol.POP3 and self.folder.strip().upper() != "INBOX":
                add("folder", "POP3 has only the INBOX.")
            if self.since and self.before and self.since >= self.before:
                add("before", "“Received before” must be later than “Received on or after”.")
        if self.kind == OperationKind.SEND:
            replying = self.reference_mode == ReferenceMode.REPLY
            if not (
                self.send_to.strip() or self.send_cc.strip() or self.send_bcc.strip() or replying
            ):
                add("send_to", "Enter at least one recipient (a reply may leave To empty).")
            if self.send_individually and not self.send_to.strip():
                add("send_to", "“One message per recipient” needs To addresses.")
            if self.reference_mode != ReferenceMode.NONE:
                if self.reference_message_id is None:
                    add("reference_message", "Choose the stored message to reply to or forward.")
                elif session is not None and self.reference_message.session_id != session.pk:
                    add("reference_message", "Choose a message stored by this session.")
            elif not (
                self.send_subject.strip()
                or self.send_text_body.strip()
                or self.send_html_body.strip()
            ):
                add("send_subject", "Enter a subject or a body: an empty message is not sent.")
        if self.kind == OperationKind.SET:
            protocol = session.in_protocol if session is not None else ""
            if not self.set_action:
                add("set_action", "Choose what to do with the selected messages.")
            else:
                allowed = SET_ACTIONS_BY_PROTOCOL.get(protocol)
                if allowed is not None and self.set_action not in allowed:
                    add(
                        "set_action",
                        f"{session.get_in_protocol_display()} can only delete messages; "
                        f"“{SetAction(self.set_action).label}” needs IMAP or Exchange.",
                    )
                elif (
                    self.set_action in (SetAction.MOVE, SetAction.COPY)
                    and not self.target_folder.strip()
                ):
                    add("target_folder", "Enter the folder to move or copy the messages to.")
            if self.source_run_id is not None and self.source_run.operation.session_id != getattr(
                session, "pk", None
            ):
                add("source_run", "Choose a run of this session.")
        for field in ("folder", "move_to", "target_folder"):
            value = getattr(self, field)
            if any(c in value for c in "\r\n\x00"):
                add(field, "A folder name cannot contain line breaks or NUL characters.")
        if errors:
            raise ValidationError(errors)


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTLY_FAILED = "partly_failed", "Partly failed"
    FAILED = "failed", "Failed"


class RunTrigger(models.TextChoices):
    MANUAL = "manual", "Manual"
    SCHEDULE = "schedule", "Schedule"
    COMMAND = "command", "Command"


class Run(models.Model):
    """One execution of an operation and its outcome (written by the services)."""

    operation = models.ForeignKey(Operation, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=15, choices=RunStatus.choices, default=RunStatus.QUEUED)
    trigger = models.CharField(max_length=10, choices=RunTrigger.choices, default=RunTrigger.MANUAL)
    queued = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    found = models.PositiveIntegerField(default=0)
    read = models.PositiveIntegerField(default=0)
    stored = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # Stored messages this run changed (Set Mail) or replied to / forwarded
    # (Send Mail); the messages a Read Mail run stored are ``messages``.
    touched = models.ManyToManyField(
        "StoredMessage", blank=True, related_name="touched_by_runs", editable=False
    )

    class Meta:
        ordering = ["-queued", "-id"]

    def __str__(self) -> str:
        return f"{self.operation} ({self.get_status_display()})"

    def __repr__(self) -> str:
        return f"<Run {self.pk} op={self.operation_id} {self.status}>"

    @property
    def done(self) -> bool:
        return self.status in (RunStatus.SUCCEEDED, RunStatus.PARTLY_FAILED, RunStatus.FAILED)


def _operation_attachment_upload_to(instance: OperationAttachment, filename: str) -> str:
    return f"outgoing/{instance.operation_id}/{filename}"


class OperationAttachment(models.Model):
    """A file a Send Mail operation attaches to every message it sends."""

    operation = models.ForeignKey(Operation, on_delete=models.CASCADE, related_name="attachments")
    file = models.FileField(upload_to=_operation_attachment_upload_to, max_length=255)
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    size = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return self.filename


def _raw_upload_to(instance: StoredMessage, filename: str) -> str:
    return f"messages/{instance.session_id}/{filename}"


def _attachment_upload_to(instance: StoredAttachment, filename: str) -> str:
    return f"attachments/{instance.message_id}/{filename}"


class StoredMessage(models.Model):
    """A message Read Mail stored, identified by where it came from.

    ``uidvalidity`` is 0 for POP3 and EWS (not NULL) so the unique constraint
    also catches their duplicates: NULLs never collide in a unique index.
    """

    session = models.ForeignKey(MailSession, on_delete=models.CASCADE, related_name="messages")
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    folder = models.CharField(max_length=255)
    server_id = models.CharField(max_length=512)
    uidvalidity = models.BigIntegerField(default=0)
    message_id = models.CharField(max_length=998, blank=True)
    from_addr = models.TextField("From", blank=True)
    to = models.TextField(blank=True)
    cc = models.TextField(blank=True)
    date = models.DateTimeField(null=True, blank=True)
    subject = models.TextField(blank=True)
    flags = models.CharField(max_length=100, blank=True)
    size = models.PositiveIntegerField(default=0)
    text_body = models.TextField(blank=True)
    html_body = models.TextField(blank=True)
    raw = models.FileField(upload_to=_raw_upload_to, max_length=255, blank=True)
    defects = models.TextField(blank=True)
    # The after-read action still owed to the server for this message (and its
    # target folder). Written in the same transaction as the row, cleared once
    # the server confirmed it: a run killed in between finishes it next time.
    pending_action = models.CharField(max_length=10, blank=True, default="")
    pending_target = models.CharField(max_length=255, blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-date", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "folder", "uidvalidity", "server_id"],
                name="unique_stored_message_per_source",
            )
        ]
        indexes = [models.Index(fields=["session", "folder"], name="stored_msg_session_folder")]

    def __str__(self) -> str:
        return self.subject or "(no subject)"

    def __repr__(self) -> str:
        return f"<StoredMessage {self.pk} {self.folder}/{self.server_id}>"


class StoredAttachment(models.Model):
    message = models.ForeignKey(StoredMessage, on_delete=models.CASCADE, related_name="attachments")
    filename = models.CharField(max_length=255, blank=True)  # decoded, for display only
    file = models.FileField(upload_to=_attachment_upload_to, max_length=255, blank=True)
    content_type = models.CharField(max_length=255, blank=True)
    size = models.PositiveIntegerField(default=0)
    too_large = models.BooleanField(default=False)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.filename or "attachment"


class SessionLease(models.Model):
    """Who works a session's mailbox right now; at most one run at a time.

    A lease, not a lock: it expires, so a worker that died while holding it
    blocks the mailbox only until ``expires``.
    """

    session = models.OneToOneField(
        MailSession, on_delete=models.CASCADE, primary_key=True, related_name="lease"
    )
    run = models.ForeignKey(Run, null=True, on_delete=models.SET_NULL, related_name="+")
    expires = models.DateTimeField()

    def __str__(self) -> str:
        return f"lease on {self.session_id} until {self.expires:%H:%M:%S}"
