"""Sign-in with a limit on failed attempts, per user name and per client address.

After ``MAILSESSIONS_LOGIN_FAILURES_PER_USER`` failed attempts for one user
name (default 5), or ``MAILSESSIONS_LOGIN_FAILURES_PER_IP`` from one client
address (default 20, so that one person's typos do not lock out an office
behind one NAT address), within ``MAILSESSIONS_LOGIN_WINDOW`` seconds (default
300), the form refuses to sign in *without checking the password* and says
when to try again. A successful sign-in forgets the user name's failures.

Failures are counted in the Django cache named by
``MAILSESSIONS_LOGIN_CACHE`` (default ``"default"``). Django's default cache
is a per-process ``LocMemCache``: with several gunicorn workers each counts on
its own, so production must point this at a shared cache (the database cache
or Redis; see docs/security.md).

The client address is ``REMOTE_ADDR``. Behind ``MAILSESSIONS_TRUSTED_PROXIES``
reverse proxies (default 0) it is taken from ``X-Forwarded-For``, counting that
many entries from the right, which are the ones the proxies themselves added
and a client cannot forge.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import caches

USER_LIMIT = 5
IP_LIMIT = 20
WINDOW = 300


@dataclass
class LoginRateLimiter:
    """Counts failed sign-ins in a sliding window, in a Django cache.

    ``clock`` is injectable so tests can move time forward.
    """

    clock: Callable[[], float] = time.time

    @property
    def cache(self):
        return caches[getattr(settings, "MAILSESSIONS_LOGIN_CACHE", "default")]

    @property
    def window(self) -> int:
        return int(getattr(settings, "MAILSESSIONS_LOGIN_WINDOW", WINDOW))

    def _limits(self, username: str, ip: str) -> list[tuple[str, int]]:
        limits = [
            (_key("user", username.strip().casefold()), _setting("PER_USER", USER_LIMIT)),
        ]
        if ip:
            limits.append((_key("ip", ip), _setting("PER_IP", IP_LIMIT)))
        return limits

    def _recent(self, key: str, now: float) -> list[float]:
        stamps = self.cache.get(key) or []
        return [t for t in stamps if isinstance(t, (int, float)) and now - t < self.window]

    def retry_after(self, *, username: str, ip: str) -> float:
        """Seconds until a sign-in may be tried again; 0 when it may now."""
        now = self.clock()
        wait = 0.0
        for key, limit in self._limits(username, ip):
            recent = self._recent(key, now)
            if len(recent) >= limit:
                # Free again once the oldest failure that still counts expires.
                oldest_counting = sorted(recent)[-limit]
                wait = max(wait, oldest_counting + self.window - now)
        return wait

    def failed(self, *, username: str, ip: str) -> None:
        now = self.clock()
        for key, limit in self._limits(username, ip):
            # Keep no more than the limit needs: the list cannot grow unbounded.
            recent = [*self._recent(key, now), now][-limit:]
            self.cache.set(key, recent, timeout=self.window + 60)

    def succeeded(self, *, username: str) -> None:
        self.cache.delete(_key("user", username.strip().casefold()))


def _setting(name: str, default: int) -> int:
    return int(getattr(settings, f"MAILSESSIONS_LOGIN_FAILURES_{name}", default))


def _key(kind: str, value: str) -> str:
    # Hashed: user names may hold characters some cache backends refuse.
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"mailsessions:login-failures:{kind}:{digest}"


def client_ip(request) -> str:
    """The client's address, trusting only our own proxies' X-Forwarded-For."""
    proxies = int(getattr(settings, "MAILSESSIONS_TRUSTED_PROXIES", 0))
    if proxies > 0:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        hops = [h for h in hops if h]
        if len(hops) >= proxies:
            return hops[-proxies][:64]
    return request.META.get("REMOTE_ADDR", "")[:64]


limiter = LoginRateLimiter()


class RateLimitedAuthenticationForm(AuthenticationForm):
    error_messages = {
        **AuthenticationForm.error_messages,
        "rate_limited": "Too many failed sign-in attempts; try again in %(minutes)s.",
    }

    def clean(self):
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is None or not password:
            return self.cleaned_data  # field errors already say what is missing
        ip = client_ip(self.request) if self.request is not None else ""
        wait = limiter.retry_after(username=username, ip=ip)
        if wait > 0:
            minutes = max(1, math.ceil(wait / 60))
            raise forms.ValidationError(
                self.error_messages["rate_limited"],
                code="rate_limited",
                params={"minutes": f"{minutes} minute" + ("" if minutes == 1 else "s")},
            )
        try:
            cleaned = super().clean()
        except forms.ValidationError as exc:
            if exc.code == "invalid_login":
                limiter.failed(username=username, ip=ip)
            raise
        limiter.succeeded(username=username)
        return cleaned


class RateLimitedLoginView(LoginView):
    """Django's LoginView (which already hides the password from error
    reports) with the failed-attempt limit above."""

    authentication_form = RateLimitedAuthenticationForm
