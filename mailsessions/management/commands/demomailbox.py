"""Run the demo mailbox in the foreground until SIGTERM/SIGINT (honcho sends SIGTERM)."""

from __future__ import annotations

import dataclasses
import signal
import threading

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from mailsessions.demo import DEMO_USER, DemoMailServer, DemoPorts, ensure_demo_session


class Command(BaseCommand):
    help = (
        "Run the demo mailbox (Dovecot IMAP/POP3 and an SMTP server on 127.0.0.1) and "
        "give the first superuser a “Demo mailbox” session. Needs MAILSESSIONS_DEMO=True."
    )

    def add_arguments(self, parser):
        defaults = DemoPorts.from_settings()
        parser.add_argument("--directory", help="where the demo keeps its files (VAR_DIR/demo)")
        for name in ("imap", "imaps", "pop3", "pop3s", "smtp"):
            parser.add_argument(f"--{name}-port", type=int, default=getattr(defaults, name))
        parser.add_argument(
            "--wait-when-disabled",
            action="store_true",
            help="when disabled, wait for SIGTERM instead of exiting (honcho stops every "
            "process as soon as one exits)",
        )

    def handle(self, *args, directory, wait_when_disabled, **options):
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())

        if not settings.MAILSESSIONS_DEMO:
            self.stdout.write(
                "The demo mailbox is disabled (set MAILSESSIONS_DEMO=True to run it)."
            )
            if wait_when_disabled:
                stop.wait()
            return

        ports = DemoPorts(
            **{f.name: options[f"{f.name}_port"] for f in dataclasses.fields(DemoPorts)}
        )
        server = DemoMailServer(directory, ports)
        try:
            server.start()
        except (OSError, RuntimeError) as exc:
            raise CommandError(f"The demo mailbox could not start: {exc}") from exc
        try:
            self._give_session(server)
            self._describe(server)
            while not stop.wait(1):
                if server.imap_server and not server.has_imap:
                    raise CommandError(
                        f"{server.imap_server} stopped unexpectedly; see {server.log_path}"
                    )
        finally:
            server.stop()
            self.stdout.write("Demo mailbox stopped.")

    def _give_session(self, server: DemoMailServer) -> None:
        if not server.imap_server:
            return
        try:
            owner = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
        except DatabaseError as exc:
            self.stderr.write(f"No demo session: the database is not ready ({exc}).")
            return
        if owner is None:
            self.stdout.write(
                "No superuser yet, so no demo session was created "
                "(python manage.py firstrun creates one; restart the demo afterwards)."
            )
            return
        try:
            session = ensure_demo_session(owner, server=server)
        except DatabaseError as exc:
            # The mailbox still works; only the shortcut in the app is missing.
            self.stderr.write(f"Could not create the demo session ({exc}); run migrate first.")
            return
        self.stdout.write(
            self.style.SUCCESS(f"“{session.name}” is ready for {owner.get_username()}.")
        )

    def _describe(self, server: DemoMailServer) -> None:
        p, host = server.ports, server.host
        lines = [f"Demo mailbox running ({server.imap_server or 'SMTP only'}), user “{DEMO_USER}”,"]
        lines.append(f"  password in {server.password_path}")
        if server.imap_server:
            lines.append(f"  IMAP {host}:{p.imap} (STARTTLS)")
        if server.has_pop3:
            lines.append(f"  IMAPS {host}:{p.imaps}, POP3 {host}:{p.pop3}, POP3S {host}:{p.pop3s}")
        lines.append(f"  SMTP {host}:{p.smtp} (STARTTLS, AUTH as {DEMO_USER}); self-signed cert")
        if server.seeded:
            lines.append(f"  seeded INBOX with {server.seeded} messages")
        self.stdout.write("\n".join(lines))
        self.stdout.flush()  # honcho shows it now, not when the buffer fills
