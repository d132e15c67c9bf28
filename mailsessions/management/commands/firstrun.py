"""Create the local admin account on the first run and say how to sign in."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a local admin account if none exists and print how to sign in."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--url", default="http://127.0.0.1:8000/")

    def handle(self, *args, username: str, url: str, **options):
        password_file = settings.VAR_DIR / "admin-password.txt"
        users = get_user_model().objects
        if not users.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            users.create_superuser(username, f"{username}@localhost", password)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
            self.stdout.write(self.style.SUCCESS(f"Created the admin account “{username}”."))
        where = (
            f"its password is in {password_file}"
            if password_file.exists()
            else "use the password you set (python manage.py changepassword admin resets it)"
        )
        self.stdout.write(f"Mail Sessions: open {url} and sign in as “{username}”; {where}.")
