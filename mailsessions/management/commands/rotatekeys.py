"""Re-encrypt every stored secret under the newest key.

Put a new key first in MAILSESSIONS_ENCRYPTION_KEYS (keep the old ones after
it), restart, run this, then remove the old keys. Rows are rotated one at a
time, so the app keeps working throughout.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction

from mailsessions import crypto
from mailsessions.models import ConnectionTest, MailSession

SECRET_FIELDS = {
    MailSession: ["in_password_encrypted", "out_password_encrypted"],
    ConnectionTest: ["config_encrypted"],
}


class Command(BaseCommand):
    help = "Re-encrypt all stored credentials under the first key of MAILSESSIONS_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        total = 0
        for model, fields in SECRET_FIELDS.items():
            for pk in model.objects.values_list("pk", flat=True).iterator():
                with transaction.atomic():
                    row = model.objects.select_for_update().filter(pk=pk).values(*fields).first()
                    if row is None:
                        continue
                    updates = {f: crypto.rotate(v) for f, v in row.items() if v}
                    if updates:
                        model.objects.filter(pk=pk).update(**updates)
                        total += len(updates)
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted {total} secrets under the newest key."))
