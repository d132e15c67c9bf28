"""Health check: the ``healthz`` view, and the probe that containers run.

``healthz`` answers 200 ``ok`` when the process serves requests and the
database answers ``SELECT 1``; 503 ``unavailable`` otherwise. It needs no
login and says nothing else (no versions, no error text).

``python -m mailsessions.health [URL]`` is the container health check: it
GETs the view over plain HTTP on the loopback and exits 0 on 200 ``ok``. Two
production settings stand in the way of a naive ``curl``, so the probe:

- sends a ``Host`` taken from ``ALLOWED_HOSTS`` (Django answers 400 to any
  other host, and 127.0.0.1 is rarely an allowed one);
- does not follow redirects: ``SECURE_SSL_REDIRECT`` must exempt the path
  (``SECURE_REDIRECT_EXEMPT = [r"^healthz$"]``); a 301 is reported as such.
"""

from __future__ import annotations

import logging
import sys
import urllib.error
import urllib.request

from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000/healthz"
PROBE_TIMEOUT = 5.0


@login_not_required
@never_cache
@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        # The reason goes to the log, never to the (unauthenticated) caller.
        logger.exception("health check: database unavailable")
        return HttpResponse("unavailable", status=503, content_type="text/plain")
    return HttpResponse("ok", content_type="text/plain")


def probe_host(allowed_hosts: list[str]) -> str:
    """A Host header Django will accept, from ALLOWED_HOSTS entries."""
    if not allowed_hosts or allowed_hosts[0] == "*":
        return "localhost"
    # ".example.org" allows example.org and its subdomains.
    return allowed_hosts[0].lstrip(".")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def probe(url: str = DEFAULT_URL) -> tuple[bool, str]:
    """GET the health URL once; return (healthy, a one-line reason)."""
    # Only mailsessions.env: reading the whole settings module is not needed.
    from mailsessions.env import envlist

    request = urllib.request.Request(url, headers={"Host": probe_host(envlist("ALLOWED_HOSTS"))})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=PROBE_TIMEOUT) as response:
            body = response.read(64)
            if response.status == 200 and body == b"ok":
                return True, "ok"
            return False, f"HTTP {response.status}, unexpected body"
    except urllib.error.HTTPError as exc:
        if exc.code in (301, 302, 307, 308):
            return False, f"HTTP {exc.code}: is SECURE_REDIRECT_EXEMPT set for healthz?"
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"no answer from {url}: {reason}"


def main(argv: list[str]) -> int:
    healthy, reason = probe(argv[0] if argv else DEFAULT_URL)
    print(reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
