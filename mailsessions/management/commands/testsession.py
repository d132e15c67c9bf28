"""Run the connection test of a saved session right here and print its stages."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from mailsessions import diagnostics, services
from mailsessions.models import MailSession


class Command(BaseCommand):
    help = "Test a saved mail session's connections; exits non-zero when a stage fails."

    def add_arguments(self, parser):
        parser.add_argument("session_id", type=int)

    def handle(self, *args, session_id: int, **options):
        try:
            session = MailSession.objects.get(pk=session_id)
        except MailSession.DoesNotExist:
            raise CommandError(f"no mail session with id {session_id}") from None
        results = []
        if session.reads:
            results.append(
                diagnostics.diagnose_incoming(session.in_protocol, session.incoming_config())
            )
        if session.sends:
            results.append(
                diagnostics.diagnose_outgoing(
                    session.outgoing_config(), sender=session.sender_address()
                )
            )
        for diagnosis in results:
            self.stdout.write(diagnosis.target)
            for stage in diagnosis.stages:
                line = f"  [{stage.outcome:>7}] {stage.title}: {stage.message} ({stage.duration_ms} ms)"
                style = {"passed": self.style.SUCCESS, "failed": self.style.ERROR}.get(
                    stage.outcome, self.style.WARNING
                )
                self.stdout.write(style(line))
            self.stdout.write(diagnosis.summary)
        passed = all(d.passed for d in results)
        services.mail_session_record_test(
            session_id=session.pk,
            passed=passed,
            summary=" / ".join(f"{d.target}: {d.summary}" for d in results),
            stages=[s.as_dict() for d in results for s in d.stages],
        )
        if not passed:
            raise CommandError(f"the connection test of “{session.name}” failed")
