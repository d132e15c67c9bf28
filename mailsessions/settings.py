"""Settings for Mail Sessions: every value comes from the environment.

With no environment set this is a development setup that needs no server:
SQLite under ``var/`` and a broker on SQLite (kombu's SQLAlchemy transport).
``MAILSESSIONS_PRODUCTION=True`` switches to production defaults that pass
``manage.py check --deploy``.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from mailsessions.env import envbool, envfloat, envint, envlist, envstr

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(envstr("MAILSESSIONS_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

PRODUCTION = envbool("MAILSESSIONS_PRODUCTION", "False")
DEBUG = envbool("DEBUG", "False" if PRODUCTION else "True")

_DEV_SECRET_KEY = "dev-only-insecure-key-change-me-in-production-0123456789abcdef"
SECRET_KEY = envstr("SECRET_KEY", "" if PRODUCTION else _DEV_SECRET_KEY)
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set in production")

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "" if PRODUCTION else "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "formtools",
    "django_celery_beat",
    "mailsessions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mailsessions.urls"
WSGI_APPLICATION = "mailsessions.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        envstr("DATABASE_URL", f"sqlite:///{VAR_DIR / 'mailsessions.sqlite3'}"),
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", "60"),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process, the worker and beat share one SQLite file.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file, not memory, so that worker processes started by tests share it.
    # One file per test run, so parallel runs on one machine never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = envstr("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(envstr("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Outside production whitenoise serves straight from static/ (no collectstatic).
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_ROOT = Path(envstr("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # Failed sign-ins (mailsessions.auth), shared by every web process.
    # Created by `manage.py createcachetable` (make run and compose's migrate run it).
    "logins": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "mailsessions_login_failures",
    },
}
MAILSESSIONS_LOGIN_CACHE = "logins"
MAILSESSIONS_LOGIN_FAILURES_PER_USER = envint("MAILSESSIONS_LOGIN_FAILURES_PER_USER", "5")
MAILSESSIONS_LOGIN_FAILURES_PER_IP = envint("MAILSESSIONS_LOGIN_FAILURES_PER_IP", "20")
MAILSESSIONS_LOGIN_WINDOW = envint("MAILSESSIONS_LOGIN_WINDOW", "300")
# Reverse proxies whose X-Forwarded-For entries are trusted (compose puts one in front).
MAILSESSIONS_TRUSTED_PROXIES = envint("MAILSESSIONS_TRUSTED_PROXIES", "1" if PRODUCTION else "0")

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "mailsessions:session-list"
LOGOUT_REDIRECT_URL = "login"

# The wizard keeps step data in the session; sessions end with the browser and
# after two weeks at most so an abandoned wizard cannot linger.
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", str(60 * 60 * 24 * 14))
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = False

if PRODUCTION:
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "True")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", str(60 * 60 * 24 * 365))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "False")
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # The container health check calls /healthz over plain HTTP from inside.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS = ["security.W021"]

# Credentials at rest: comma-separated Fernet keys, newest first. The first
# encrypts, all of them decrypt (see ``mailsessions.crypto`` and the
# ``rotatekeys`` command).
_DEV_FERNET_KEY = "ZGV2LW9ubHktaW5zZWN1cmUta2V5LWNoYW5nZS1tZT0="
MAILSESSIONS_ENCRYPTION_KEYS = envlist(
    "MAILSESSIONS_ENCRYPTION_KEYS", "" if PRODUCTION else _DEV_FERNET_KEY
)
if not MAILSESSIONS_ENCRYPTION_KEYS:
    raise ImproperlyConfigured("MAILSESSIONS_ENCRYPTION_KEYS must be set in production")

# Every network call to a mail server has this timeout (seconds).
MAILSESSIONS_NETWORK_TIMEOUT = envfloat("MAILSESSIONS_NETWORK_TIMEOUT", "15")
# Which hosts connection tests and operations may reach (see mailsessions.policy).
MAILSESSIONS_ALLOWED_HOSTS = envlist("MAILSESSIONS_ALLOWED_HOSTS")
MAILSESSIONS_DENIED_HOSTS = envlist("MAILSESSIONS_DENIED_HOSTS")
MAILSESSIONS_BLOCK_PRIVATE_NETWORKS = envbool(
    "MAILSESSIONS_BLOCK_PRIVATE_NETWORKS", "True" if PRODUCTION else "False"
)
MAILSESSIONS_ALLOW_LOOPBACK = envbool(
    "MAILSESSIONS_ALLOW_LOOPBACK", "False" if PRODUCTION else "True"
)
MAILSESSIONS_ALLOWED_PORTS = [int(p) for p in envlist("MAILSESSIONS_ALLOWED_PORTS")]
# First retry of a transient failure waits this long; each retry doubles it (capped).
MAILSESSIONS_RETRY_BASE_SECONDS = envint("MAILSESSIONS_RETRY_BASE_SECONDS", "10")
# E-mail the owner when a schedule's runs keep failing (operations.py).
MAILSESSIONS_NOTIFY_FAILING = envbool("MAILSESSIONS_NOTIFY_FAILING", "True")
# Optional absolute URL of the app, for links in notices (e.g. https://mail.example.org).
MAILSESSIONS_SITE_URL = envstr("MAILSESSIONS_SITE_URL", "")
# The site's own SMTP settings: used for notices when a session cannot send them.
EMAIL_BACKEND = envstr(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if PRODUCTION
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_HOST = envstr("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", "25")
EMAIL_HOST_USER = envstr("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = envstr("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", "False")
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL", "False")
EMAIL_TIMEOUT = envint("EMAIL_TIMEOUT", "15")
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "mailsessions@localhost")
# Connection tests and test mails a user may start per minute.
MAILSESSIONS_TEST_RATE_PER_MINUTE = envint("MAILSESSIONS_TEST_RATE_PER_MINUTE", "10")
# Largest file a user may attach to a Send Mail operation (bytes).
MAILSESSIONS_MAX_UPLOAD_SIZE = envint("MAILSESSIONS_MAX_UPLOAD_SIZE", str(25 * 1024 * 1024))
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
MAILSESSIONS_DEMO = envbool("MAILSESSIONS_DEMO", "False")
# Loopback ports of the demo mail server `make run` starts (manage.py demomailbox).
MAILSESSIONS_DEMO_IMAP_PORT = envint("MAILSESSIONS_DEMO_IMAP_PORT", "10143")
MAILSESSIONS_DEMO_IMAPS_PORT = envint("MAILSESSIONS_DEMO_IMAPS_PORT", "10993")
MAILSESSIONS_DEMO_POP3_PORT = envint("MAILSESSIONS_DEMO_POP3_PORT", "10110")
MAILSESSIONS_DEMO_POP3S_PORT = envint("MAILSESSIONS_DEMO_POP3S_PORT", "10995")
MAILSESSIONS_DEMO_SMTP_PORT = envint("MAILSESSIONS_DEMO_SMTP_PORT", "10587")

# Without a broker server: kombu's SQLAlchemy transport on a SQLite file. It
# was chosen over the filesystem transport because it takes each message in a
# database transaction, so several worker processes never take the same one;
# neither redelivers a message whose worker died (Redis does, see
# visibility_timeout), which is why stale runs are reaped (runs.py).
CELERY_BROKER_URL = envstr(
    "CELERY_BROKER_URL", f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}"
)
CELERY_TASK_DEFAULT_QUEUE = envstr("CELERY_TASK_DEFAULT_QUEUE", "mailsessions")
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", "False")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# An unacknowledged task (its worker died) is delivered again after this many
# seconds; longer than the longest run (runs.RUN_TIME_LIMIT) so a live run is
# never delivered twice.
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {"visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", "3600")}
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
    else {}
)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
# Beat copies this into its database schedule: finds runs whose worker died.
CELERY_BEAT_SCHEDULE = {
    "fail-stale-runs": {"task": "mailsessions.tasks.fail_stale_runs", "schedule": 300.0},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {
        # Library wire logs would carry credentials at DEBUG level.
        "imapclient": {"level": "WARNING"},
        "exchangelib": {"level": "WARNING"},
        "mail.log": {"level": "WARNING"},
    },
}
