# One image for every process of Mail Sessions: web (gunicorn), worker and
# beat (celery), and the one-shot migrate. compose.yaml picks the command.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --system --user-group --uid 10001 --home-dir /app --shell /usr/sbin/nologin app

# Dependencies first (pinned by the lock file), so that a change to templates
# or static files does not reinstall them.
COPY pyproject.toml requirements.lock ./
COPY mailsessions ./mailsessions
RUN pip install -c requirements.lock . && rm -rf build ./*.egg-info

# Explicit sources, not "COPY . .": a developer's .env, var/ (SQLite data,
# admin password) and .venv must never end up in the image.
COPY manage.py ./
COPY templates ./templates
COPY static ./static

# /data is MAILSESSIONS_VAR_DIR: media (stored attachments) and collected
# static files are volumes mounted below it; created here so that new named
# volumes start out owned by the app user.
RUN mkdir -p /data/media /data/staticfiles && chown -R app:app /data

# settings.py finds templates/ and static/ next to the package (BASE_DIR), so
# the copy in /app must win over the one pip put into site-packages.
ENV PYTHONPATH=/app \
    MAILSESSIONS_PRODUCTION=True \
    MAILSESSIONS_VAR_DIR=/data

USER app
EXPOSE 8000
CMD ["gunicorn", "mailsessions.wsgi", "--bind", "0.0.0.0:8000"]
