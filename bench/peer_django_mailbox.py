"""django-mailbox's ``get_new_mail()`` into SQLite, for comparison only.

Runs in ``var/bench-venv`` (Django + django-mailbox, nothing of ours), with
minimal Django settings of its own, so the peer never becomes a dependency of
the product and its models never meet ours. Input: one JSON object in
``argv[1]`` (``workdir``, ``uri``); output: one JSON line on stdout.

The SQLite pragmas are the same as the product's (WAL, synchronous=NORMAL),
so the comparison is about the code, not about fsync settings.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> dict:
    spec = json.loads(argv[1])
    workdir = Path(spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes", "django_mailbox"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(workdir / "peer.sqlite3"),
                "OPTIONS": {
                    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                    "transaction_mode": "IMMEDIATE",
                    "timeout": 20,
                },
            }
        },
        MEDIA_ROOT=str(workdir / "media"),
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django_mailbox.models import Mailbox, Message

    mailbox = Mailbox.objects.create(name="bench", uri=spec["uri"])
    started = time.perf_counter()
    count = sum(1 for _ in mailbox.get_new_mail())
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "count": count, "stored": Message.objects.count()}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv)))
