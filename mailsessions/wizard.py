"""The mail-session wizard: Operation mode → Incoming → Outgoing → Review.

formtools' ``SessionStorage`` keeps every step's raw POST data in the Django
session until ``done()``. ``EncryptedSessionStorage`` encrypts password
values before they are stored there, with tokens that expire after
``WIZARD_SECRET_TTL`` seconds, so an abandoned wizard leaves no readable
password behind.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.db import transaction
from django.http import HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from formtools.wizard.storage.session import SessionStorage
from formtools.wizard.views import SessionWizardView

from mailsessions import crypto, services
from mailsessions.forms import IncomingForm, ModeForm, OutgoingForm, ReviewForm
from mailsessions.models import MailSession, Mode, TestKind


class Step:
    MODE = "mode"
    INCOMING = "incoming"
    OUTGOING = "outgoing"
    REVIEW = "review"


STEP_TITLES = {
    Step.MODE: "Operation mode",
    Step.INCOMING: "Incoming mail",
    Step.OUTGOING: "Outgoing mail",
    Step.REVIEW: "Review and save",
}

WIZARD_SECRET_TTL = 60 * 60
_SECRET_MARK = "enc:"


def _is_secret(key: str) -> bool:
    return key.endswith("password")


class EncryptedSessionStorage(SessionStorage):
    """SessionStorage that never writes a password value in plaintext."""

    @method_decorator(sensitive_variables())
    def set_step_data(self, step, cleaned_data):
        super().set_step_data(step, cleaned_data)
        data = self.data[self.step_data_key][step]
        for key, values in data.items():
            if _is_secret(key):
                data[key] = [_SECRET_MARK + crypto.encrypt(v) if v else "" for v in values]

    @method_decorator(sensitive_variables())
    def get_step_data(self, step):
        values = super().get_step_data(step)
        if values is None:
            return None
        for key in list(values.keys()):
            if _is_secret(key):
                plain = []
                for value in values.getlist(key):
                    if value.startswith(_SECRET_MARK):
                        try:
                            value = crypto.decrypt(
                                value[len(_SECRET_MARK) :], ttl=WIZARD_SECRET_TTL
                            )
                        except crypto.DecryptionError:
                            value = ""  # expired: the step asks for it again
                    plain.append(value)
                values.setlist(key, plain)
        return values


def _mode_of(wizard) -> str:
    data = wizard.get_cleaned_data_for_step(Step.MODE) or {}
    if data.get("mode"):
        return data["mode"]
    if wizard.object is not None:
        return wizard.object.mode
    return Mode.READ_SEND


def show_incoming(wizard) -> bool:
    return _mode_of(wizard) in (Mode.READ_SEND, Mode.READ)


def show_outgoing(wizard) -> bool:
    return _mode_of(wizard) in (Mode.READ_SEND, Mode.SEND)


@method_decorator(sensitive_post_parameters(), name="dispatch")
class MailSessionWizard(LoginRequiredMixin, SessionWizardView):
    """Creates a session, or edits one when the URL names it."""

    storage_name = "mailsessions.wizard.EncryptedSessionStorage"
    form_list = [
        (Step.MODE, ModeForm),
        (Step.INCOMING, IncomingForm),
        (Step.OUTGOING, OutgoingForm),
        (Step.REVIEW, ReviewForm),
    ]
    condition_dict = {Step.INCOMING: show_incoming, Step.OUTGOING: show_outgoing}
    template_name = "mailsessions/wizard.html"

    def dispatch(self, request, *args, **kwargs):
        self.object = None
        if "pk" in kwargs and request.user.is_authenticated:
            self.object = get_object_or_404(
                MailSession.objects.owned_by(request.user), pk=kwargs["pk"]
            )
        return super().dispatch(request, *args, **kwargs)

    def post(self, *args, **kwargs):
        posted_step = self.request.POST.get(f"{self.prefix}-current_step")
        if posted_step is not None and posted_step not in self.get_form_list():
            return HttpResponseBadRequest("Unknown wizard step.")
        kind = self.request.POST.get("wizard_test")
        if kind:
            return self._start_test(kind)
        return super().post(*args, **kwargs)

    @method_decorator(sensitive_variables("earlier", "form", "instance"))
    def _start_test(self, kind: str):
        """Test the current step's unsaved data (the Test buttons post here)."""
        from mailsessions.views import start_test_response

        step = Step.INCOMING if kind == TestKind.INCOMING else Step.OUTGOING
        if kind not in TestKind.values or step not in self.get_form_list():
            return JsonResponse({"error": "This test does not apply to this session."}, status=400)
        form = self.get_form(step, data=self.request.POST)
        if not form.is_valid():
            errors = {name: [str(e) for e in errs] for name, errs in form.errors.items()}
            return JsonResponse({"errors": errors}, status=400)
        instance = form.instance
        instance.name = self.object.name if self.object else ""
        if step == Step.INCOMING:
            if form.cleaned_data.get("in_password"):
                instance.set_in_password(form.cleaned_data["in_password"])
        else:
            if form.cleaned_data.get("out_password"):
                instance.set_out_password(form.cleaned_data["out_password"])
            # A send-only session has no incoming step (formtools raises KeyError for it).
            earlier = instance.reads and self.get_cleaned_data_for_step(Step.INCOMING) or {}
            if earlier.get("in_password"):
                instance.set_in_password(earlier["in_password"])
        return start_test_response(self.request, kind=kind, instance=instance, session=self.object)

    def get_prefix(self, request, *args, **kwargs):
        # One wizard state per session being edited, so two tabs do not mix.
        suffix = f"_{self.object.pk}" if self.object else "_new"
        return super().get_prefix(request, *args, **kwargs) + suffix

    def get_form_initial(self, step):
        if self.object is None:
            return {}
        if step == Step.MODE:
            return {"mode": self.object.mode}
        if step == Step.REVIEW:
            return {"name": self.object.name}
        return {}

    def get_form_instance(self, step):
        if step not in (Step.INCOMING, Step.OUTGOING):
            return None
        # A throwaway copy per form: forms fill it while validating, and only
        # done() decides what is saved.
        if self.object is not None:
            instance = MailSession.objects.get(pk=self.object.pk)
        else:
            instance = MailSession(owner=self.request.user)
        instance.mode = _mode_of(self)
        if step == Step.OUTGOING and instance.reads:
            # The SMTP step may borrow the incoming account (an earlier step).
            earlier = self.get_cleaned_data_for_step(Step.INCOMING) or {}
            for field in ("in_protocol", "in_username", "ews_email"):
                if field in earlier:
                    setattr(instance, field, earlier[field])
        return instance

    def get_form_kwargs(self, step=None):
        kwargs = super().get_form_kwargs(step)
        if step in (Step.INCOMING, Step.OUTGOING):
            kwargs["mode"] = _mode_of(self)
            stored = self.object is not None and (
                self.object.has_in_password
                if step == Step.INCOMING
                else self.object.has_out_password
            )
            kwargs["stored_password"] = stored
        if step == Step.REVIEW:
            kwargs["owner"] = self.request.user
            kwargs["instance_pk"] = self.object.pk if self.object else None
        return kwargs

    def get_context_data(self, form, **kwargs):
        context = super().get_context_data(form=form, **kwargs)
        steps = [s for s in self.get_form_list()]
        context.update(
            object=self.object,
            step_titles=[(s, STEP_TITLES[s]) for s in steps],
            step_title=STEP_TITLES[self.steps.current],
            current_step=self.steps.current,
        )
        if self.steps.current == Step.REVIEW:
            context["summary"] = self._summary()
        if self.steps.current == Step.INCOMING:
            context["test_buttons"] = [("Test connection", self.request.path, TestKind.INCOMING)]
        if self.steps.current == Step.OUTGOING:
            context["test_buttons"] = [
                ("Test connection", self.request.path, TestKind.OUTGOING),
                ("Send test mail", self.request.path, TestKind.TEST_MAIL),
            ]
        return context

    def _summary(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """What will be saved, for the review step (never a password)."""
        sections = []
        mode = _mode_of(self)
        sections.append(("Operation mode", [("Mode", Mode(mode).label)]))
        for step in (Step.INCOMING, Step.OUTGOING):
            if step not in self.get_form_list():
                continue
            form = self.get_form(step, data=self.storage.get_step_data(step))
            if not form.is_valid():
                continue
            rows = []
            is_ews = form.cleaned_data.get("in_protocol") == "ews"
            for name, field in form.fields.items():
                if name.endswith("password") or field.widget.is_hidden:
                    continue
                if name.startswith("ews_") and not is_ews:
                    continue
                value = form.cleaned_data.get(name)
                if value in ("", None) and not isinstance(value, bool):
                    continue
                if hasattr(field, "choices") and not isinstance(value, bool):
                    value = dict(field.choices).get(value, value)
                elif isinstance(value, bool):
                    value = "Yes" if value else "No"
                rows.append((str(field.label), str(value)))
            password = form.cleaned_data.get(form.password_field)
            rows.append(
                (
                    "Password",
                    "entered" if password else ("kept" if form.stored_password else "none"),
                )
            )
            sections.append((STEP_TITLES[step], rows))
        return sections

    @method_decorator(sensitive_variables("passwords", "parts"))
    def done(self, form_list, form_dict, **kwargs):
        mode = form_dict[Step.MODE].cleaned_data["mode"]
        parts = {}
        passwords = {}
        for step in (Step.INCOMING, Step.OUTGOING):
            if step in form_dict:
                data = dict(form_dict[step].cleaned_data)
                passwords[step] = data.pop(form_dict[step].password_field, "")
                parts[step] = data
        with transaction.atomic():
            session = services.mail_session_save(
                owner=self.request.user,
                instance=self.object,
                name=form_dict[Step.REVIEW].cleaned_data["name"],
                mode=mode,
                incoming=parts.get(Step.INCOMING),
                outgoing=parts.get(Step.OUTGOING),
                in_password=passwords.get(Step.INCOMING, ""),
                out_password=passwords.get(Step.OUTGOING, ""),
            )
        verb = "updated" if self.object else "saved"
        messages.success(self.request, f"Mail session “{session.name}” {verb}.")
        return redirect(session)
