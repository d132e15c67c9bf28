from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db import models
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from mailsessions.forms import PasswordField
from mailsessions.models import ConnectionTest, MailSession, Operation, Run, StoredMessage


class MailSessionAdminForm(forms.ModelForm):
    """Passwords can be replaced here, never read: the stored value is not rendered."""

    new_in_password = PasswordField(
        label="Change incoming password", help_text="Leave empty to keep the stored password."
    )
    new_out_password = PasswordField(
        label="Change SMTP password", help_text="Leave empty to keep the stored password."
    )

    def save(self, commit=True):
        session = super().save(commit=False)
        if self.cleaned_data.get("new_in_password"):
            session.set_in_password(self.cleaned_data["new_in_password"])
        if self.cleaned_data.get("new_out_password"):
            session.set_out_password(self.cleaned_data["new_out_password"])
        if commit:
            session.save()
        return session


@admin.register(MailSession)
class MailSessionAdmin(admin.ModelAdmin):
    form = MailSessionAdminForm
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = [
        "name",
        "owner",
        "mode",
        "in_protocol",
        "server_summary",
        "last_test_outcome",
        "updated",
    ]
    list_filter = ["mode", "in_protocol", "in_encryption", "out_encryption", "last_test_outcome"]
    search_fields = [
        "name",
        "in_host",
        "out_host",
        "in_username",
        "out_username",
        "owner__username",
    ]
    list_select_related = ["owner"]
    autocomplete_fields = ["owner"]
    readonly_fields = [
        "has_in_password",
        "has_out_password",
        "last_test_at",
        "last_test_outcome",
        "last_test_summary",
        "created",
        "updated",
    ]
    fieldsets = [
        (None, {"fields": ["owner", "name", "mode"]}),
        (
            "Incoming mail",
            {
                "fields": [
                    "in_protocol",
                    "in_encryption",
                    "in_allow_plaintext",
                    "in_host",
                    "in_port",
                    "in_username",
                    "has_in_password",
                    "new_in_password",
                    "in_verify_certificate",
                    "ews_endpoint",
                    "ews_auth_type",
                    "ews_email",
                ]
            },
        ),
        (
            "Outgoing mail",
            {
                "fields": [
                    "out_host",
                    "out_port",
                    "out_encryption",
                    "out_allow_plaintext",
                    "out_verify_certificate",
                    "out_use_different_credentials",
                    "out_no_auth",
                    "out_username",
                    "has_out_password",
                    "new_out_password",
                    "out_sender",
                    "test_mail_to",
                ]
            },
        ),
        (
            "Last connection test",
            {"fields": ["last_test_at", "last_test_outcome", "last_test_summary"]},
        ),
        (None, {"fields": ["created", "updated"]}),
    ]

    @method_decorator(sensitive_post_parameters("new_in_password", "new_out_password"))
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return super().changeform_view(request, object_id, form_url, extra_context)

    @admin.display(boolean=True, description="Incoming password stored")
    def has_in_password(self, obj):
        return obj.has_in_password

    @admin.display(boolean=True, description="SMTP password stored")
    def has_out_password(self, obj):
        return obj.has_out_password


@admin.register(ConnectionTest)
class ConnectionTestAdmin(admin.ModelAdmin):
    list_display = ["created", "kind", "status", "session", "owner", "target", "summary"]
    list_filter = ["kind", "status"]
    search_fields = ["target", "summary", "session__name"]
    list_select_related = ["session", "owner"]
    exclude = ["config_encrypted"]
    readonly_fields = [
        "owner",
        "session",
        "kind",
        "status",
        "target",
        "stages",
        "summary",
        "started",
        "finished",
    ]


class RunInline(admin.TabularInline):
    model = Run
    extra = 0
    can_delete = False
    fields = [
        "queued",
        "trigger",
        "status",
        "duration_ms",
        "found",
        "stored",
        "sent",
        "changed",
        "failed",
        "error",
    ]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "session", "schedule", "failing", "updated"]
    list_filter = ["kind", "session__mode", "periodic_task__enabled"]
    search_fields = ["name", "session__name", "session__owner__username"]
    list_select_related = ["session", "periodic_task"]
    autocomplete_fields = ["session"]
    inlines = [RunInline]

    @admin.display(description="Schedule")
    def schedule(self, obj):
        task = obj.periodic_task
        if task is None:
            return "—"
        return f"{task.interval or task.crontab}" + ("" if task.enabled else " (disabled)")

    @admin.display(boolean=True, description="Keeps failing")
    def failing(self, obj):
        from mailsessions.operations import operation_failing

        return operation_failing(operation=obj)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "queued",
        "operation",
        "trigger",
        "status",
        "duration_ms",
        "found",
        "stored",
        "sent",
        "changed",
        "failed",
    ]
    list_filter = ["status", "trigger", "operation__kind"]
    search_fields = ["operation__name", "error"]
    list_select_related = ["operation"]
    readonly_fields = [f.name for f in Run._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(StoredMessage)
class StoredMessageAdmin(admin.ModelAdmin):
    list_display = ["date", "subject", "from_addr", "folder", "session", "size"]
    list_filter = ["folder", "session"]
    search_fields = ["subject", "from_addr", "message_id"]
    list_select_related = ["session"]
    exclude = ["text_body", "html_body"]
    readonly_fields = [
        "session",
        "run",
        "folder",
        "server_id",
        "uidvalidity",
        "message_id",
        "from_addr",
        "to",
        "cc",
        "date",
        "subject",
        "flags",
        "size",
        "raw",
        "defects",
    ]
