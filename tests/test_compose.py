"""The production shape: compose.yaml, the Dockerfile, .env.example, /healthz.

No container engine runs on the project's machines, so:

- the fast tests read the files and hold them against what the settings
  module really reads (its source, parsed with ``ast``) and against each other
  (volumes mounted where settings put media and static files, one image, a
  scalable worker, a single beat, no secret in the files);
- the slow tests run the exact commands of the compose services and their
  health checks as local processes, against the local PostgreSQL and Redis,
  with the environment the image and .env give the containers.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.urls import path

from mailsessions import health

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
APP_SERVICES = ("migrate", "web", "worker", "beat")
LONG_RUNNING = ("web", "worker", "beat", "redis", "postgres")
ENV_HELPERS = {"envstr", "envbool", "envint", "envfloat", "envlist"}

# Names in compose.yaml or .env.example that the settings module does not
# read, and who reads them. Each must be used in compose.yaml.
OTHER_READERS = {
    "WEB_CONCURRENCY": "compose.yaml: gunicorn --workers",
    "WORKER_CONCURRENCY": "compose.yaml: celery worker --concurrency",
    "POSTGRES_USER": "the postgres image",
    "POSTGRES_PASSWORD": "the postgres image",
    "POSTGRES_DB": "the postgres image",
    "HOSTNAME": "Docker, in each container: the worker's node name",
}
# Production has sensible defaults for these, but not for compose: SQLite
# files and a SQLite broker are not shared between containers.
MUST_SET_FOR_COMPOSE = {"DATABASE_URL", "CELERY_BROKER_URL"}

# The view under test, mounted here until/independently of mailsessions.urls.
urlpatterns = [path("healthz", health.healthz)]


# ----------------------------------------------------------------- readers


def load_compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@dataclass
class EnvRead:
    helper: str
    production_default: str | None  # None: an expression we do not evaluate
    required_in_production: bool


def settings_env_reads() -> dict[str, EnvRead]:
    """Every ``env*("NAME", default)`` call in the mailsessions package."""
    reads: dict[str, EnvRead] = {}
    for source in sorted((ROOT / "mailsessions").rglob("*.py")):
        if "migrations" in source.parts:
            continue
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ENV_HELPERS
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                continue
            default = node.args[1] if len(node.args) > 1 else ast.Constant("")
            required = (
                # "" if PRODUCTION else <dev default>: production must set it.
                isinstance(default, ast.IfExp)
                and isinstance(default.test, ast.Name)
                and default.test.id == "PRODUCTION"
                and isinstance(default.body, ast.Constant)
                and default.body.value == ""
            )
            if isinstance(default, ast.IfExp) and getattr(default.test, "id", "") == "PRODUCTION":
                default = default.body
            value = default.value if isinstance(default, ast.Constant) else None
            reads[node.args[0].value] = EnvRead(node.func.id, value, required)
    return reads


def os_environ_reads() -> set[str]:
    """Names read straight from os.environ / os.getenv anywhere in the package."""
    names = set()
    for source in (ROOT / "mailsessions").rglob("*.py"):
        text = source.read_text()
        names |= set(
            re.findall(r"os\.(?:environ\.(?:get|setdefault)\(|getenv\()\s*\"(\w+)\"", text)
        )
        names |= set(re.findall(r"os\.environ\[\"(\w+)\"\]", text))
    return names


def compose_env_names(compose: dict[str, Any]) -> set[str]:
    """Variables compose substitutes (${X}) and the containers' shells expand ($$X)."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v)
                if k == "environment" and isinstance(v, dict):
                    names.update(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            names.update(re.findall(r"\$\$\{?([A-Za-z_]\w*)", value))
            names.update(re.findall(r"\$\{?([A-Za-z_]\w*)", value.replace("$$", "")))

    walk(compose)
    return names


def env_example() -> list[tuple[int, str, str | None, bool]]:
    """.env.example as (line number, kind, name, active) for each line."""
    rows = []
    for number, line in enumerate((ROOT / ".env.example").read_text().splitlines(), 1):
        if m := re.fullmatch(r"(#?)([A-Z][A-Z0-9_]*)=(.*)", line):
            rows.append((number, "var", m.group(2), not m.group(1)))
        elif not line.strip():
            rows.append((number, "blank", None, False))
        elif line.startswith("#"):
            rows.append((number, "comment", None, False))
        else:
            rows.append((number, "junk", line, False))
    return rows


def env_example_values() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if m := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            values[m.group(1)] = m.group(2)
    return values


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln for ln in text.replace("\\\n", " ").splitlines() if ln.strip()]
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1])
        for ln in lines
        if not ln.lstrip().startswith("#")
    ]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for instruction, args in dockerfile_instructions():
        if instruction == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(args)))
    return env


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ${X}, ${X:-default}, ${X:?error}, $$."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group("name") or m.group("bare"), m.group("op"), m.group("arg")
        value = env.get(name)
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        if op in (":?", "?") and not value:
            raise KeyError(f"{name}: {arg}")
        return value or ""

    pattern = r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
    return re.sub(pattern, one, text)


# --------------------------------------------------------------- fast tests


def test_required_services_exist():
    services = load_compose()["services"]
    assert set(APP_SERVICES) | {"redis", "postgres"} <= set(services)
    assert services["redis"]["image"].startswith("redis:7")
    assert services["postgres"]["image"].startswith("postgres:15")


def test_app_services_share_one_image_built_from_the_dockerfile():
    services = load_compose()["services"]
    builds = {json.dumps(services[name].get("build"), sort_keys=True) for name in APP_SERVICES}
    images = {services[name].get("image") for name in APP_SERVICES}
    assert len(builds) == 1 and len(images) == 1, (builds, images)
    build = services["web"]["build"]
    assert (ROOT / build["context"]).is_dir()
    assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()


def test_every_file_referenced_exists():
    compose = load_compose()
    for name, service in compose["services"].items():
        env_files = service.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            # .env itself holds secrets: it is made from its template, never committed.
            assert (ROOT / env_file).is_file() or (ROOT / f"{env_file}.example").is_file(), name
            assert env_file in (ROOT / ".gitignore").read_text().split(), env_file
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} is missing"
            else:
                assert source in compose.get("volumes", {}), f"{name}: undeclared volume {source}"
    for instruction, args in dockerfile_instructions():
        if instruction == "COPY" and not args.startswith("--from"):
            for source in shlex.split(args)[:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_commands_start_the_expected_programs():
    services = load_compose()["services"]
    assert services["web"]["command"][:2] == ["gunicorn", "mailsessions.wsgi"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "mailsessions", "worker"]
    assert "${WORKER_CONCURRENCY" in " ".join(services["worker"]["command"])
    assert services["beat"]["command"][:4] == ["celery", "-A", "mailsessions", "beat"]
    migrate = " ".join(services["migrate"]["command"])
    assert "python manage.py migrate --noinput" in migrate
    assert "python manage.py collectstatic --noinput" in migrate
    assert services["migrate"].get("restart") == "no"
    for program in ("gunicorn", "celery", "python"):
        assert (VENV_BIN / program).exists(), f"{program} is not installed in {VENV_BIN}"


def test_start_order_and_health_checks():
    services = load_compose()["services"]
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    expected = {
        "web": "mailsessions.health",
        "worker": "inspect ping",
        "beat": "celerybeat.pid",
        "redis": "redis-cli ping",
        "postgres": "pg_isready",
    }
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck", {})
        assert expected[name] in " ".join(check.get("test", [])), name
        assert services[name].get("restart") == "unless-stopped", name
    # The beat check reads the pid file that the beat command writes.
    assert "/tmp/celerybeat.pid" in services["beat"]["command"]


def test_worker_scales_and_beat_does_not():
    services = load_compose()["services"]
    for name, service in services.items():
        assert "container_name" not in service, f"{name}: container_name prevents --scale"
    assert "ports" not in services["worker"]
    assert services["beat"].get("deploy", {}).get("replicas", 1) <= 1
    assert services["beat"].get("scale", 1) <= 1


def test_volumes_are_where_settings_put_data(production_settings):
    """Database data, media and static files live on named volumes."""
    compose = load_compose()
    services = compose["services"]

    def mounts(name: str) -> dict[str, str]:
        return {v.split(":")[1]: v.split(":")[0] for v in services[name].get("volumes", [])}

    assert "/var/lib/postgresql/data" in mounts("postgres")
    media = production_settings["MEDIA_ROOT"]
    static = production_settings["STATIC_ROOT"]
    for name in ("web", "worker"):
        assert media in mounts(name), f"{name} does not mount MEDIA_ROOT={media}"
    assert mounts("migrate")[static] == mounts("web")[static], "web must see collectstatic's files"
    for target, source in mounts("web").items():
        assert source in compose["volumes"], target


def test_no_secret_in_compose_or_dockerfile():
    compose = load_compose()
    secretish = re.compile(r"PASSWORD|SECRET|KEY|TOKEN")
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: use a mapping for environment"
        for key, value in environment.items():
            if secretish.search(key) or key.endswith("_URL"):
                # Only a reference to .env, never a value.
                assert re.fullmatch(r"\$\{\w+(:?[-?][^}]*)?\}", str(value)), f"{name}: {key}"
    for key in dockerfile_env():
        assert not secretish.search(key), f"Dockerfile sets {key}"


def test_dockerfile():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert any(i == "RUN" and "pip install -c requirements.lock ." in a for i, a in instructions)
    users = [a.strip() for i, a in instructions if i == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    env = dockerfile_env()
    assert env["MAILSESSIONS_PRODUCTION"] == "True"
    assert env["MAILSESSIONS_VAR_DIR"] == "/data"


def test_every_env_name_is_read_by_someone():
    reads = settings_env_reads()
    known = set(reads) | os_environ_reads() | set(OTHER_READERS)
    known |= {f"{name}_FILE" for name in reads}  # mailsessions.env reads NAME_FILE
    compose_names = compose_env_names(load_compose())
    example_names = {name for _, kind, name, _ in env_example() if kind == "var"}
    assert compose_names - known == set(), "compose.yaml names variables nobody reads"
    assert example_names - known == set(), ".env.example names variables nobody reads"
    stale = {name for name in OTHER_READERS if name not in compose_names}
    assert stale == set(), "OTHER_READERS lists names compose.yaml no longer uses"


def test_env_example_covers_what_settings_reads():
    reads = settings_env_reads()
    # The parser must see the settings module, or this test proves nothing.
    assert {"SECRET_KEY", "MAILSESSIONS_ENCRYPTION_KEYS"} <= {
        name for name, read in reads.items() if read.required_in_production
    }
    rows = env_example()
    documented = {name for _, kind, name, _ in rows if kind == "var"}
    active = {name for _, kind, name, is_active in rows if kind == "var" and is_active}
    assert set(reads) - documented == set(), "settings reads variables .env.example omits"
    required = {name for name, read in reads.items() if read.required_in_production}
    assert (required | MUST_SET_FOR_COMPOSE) - active == set()


def test_env_example_is_well_formed_and_commented():
    rows = env_example()
    assert [r for r in rows if r[1] == "junk"] == []
    names = [name for _, kind, name, _ in rows if kind == "var"]
    assert len(names) == len(set(names)), "a variable appears twice"
    # Each variable, or group of adjacent variables, has a comment right above.
    for index, (number, kind, name, _) in enumerate(rows):
        if kind != "var":
            continue
        above = index - 1
        while above >= 0 and rows[above][1] == "var":
            above -= 1
        assert above >= 0 and rows[above][1] == "comment", f"line {number}: {name} lacks a comment"
    text = (ROOT / ".env.example").read_text()
    assert "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())" in text


def test_healthz_answers_ok_without_login(client, db, settings):
    settings.ROOT_URLCONF = __name__
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok"
    assert response["Content-Type"].startswith("text/plain")
    assert "no-store" in response["Cache-Control"]
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405


@pytest.mark.parametrize(
    ("allowed", "host"),
    [
        ([], "localhost"),
        (["*"], "localhost"),
        (["mail.example.org", "127.0.0.1"], "mail.example.org"),
        ([".example.org"], "example.org"),
        (["[::1]"], "[::1]"),
    ],
)
def test_probe_sends_an_allowed_host(allowed, host):
    assert health.probe_host(allowed) == host


# --------------------------------------------------- processes like containers


def container_env(var_dir: Path, values: dict[str, str]) -> dict[str, str]:
    """What a container gets: a bare environment, the image's ENV, then .env
    (``values``). Nothing of this test process's environment leaks in (pytest
    sets DJANGO_ALLOW_ASYNC_UNSAFE, for one, which check --deploy rejects)."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    paths = {"/app": str(ROOT), "/data": str(var_dir)}
    for key, value in dockerfile_env().items():
        env[key] = paths.get(value, value)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env.update(values)
    return env


@pytest.fixture(scope="module")
def production_settings(tmp_path_factory) -> dict[str, Any]:
    """Settings as the image + .env.example give them (placeholders filled in),
    with container paths: the settings module must accept every example value."""
    from cryptography.fernet import Fernet

    var_dir = tmp_path_factory.mktemp("data")
    values = env_example_values()
    for key, value in values.items():
        if value == "CHANGE-ME":
            values[key] = secrets.token_urlsafe(50)
    values["MAILSESSIONS_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    code = (
        "import json; from django.conf import settings as s; print(json.dumps({k: str(getattr(s, k))"
        " for k in ('MEDIA_ROOT', 'STATIC_ROOT', 'DEBUG', 'SECURE_SSL_REDIRECT')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**container_env(var_dir, values), "DJANGO_SETTINGS_MODULE": "mailsessions.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["DEBUG"] == "False" and loaded["SECURE_SSL_REDIRECT"] == "True"
    for key in ("MEDIA_ROOT", "STATIC_ROOT"):
        loaded[key] = loaded[key].replace(str(var_dir), "/data")
    return loaded


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def can_unshare_uts() -> bool:
    unshare = shutil.which("unshare")
    if not unshare:
        return False
    probe = subprocess.run([unshare, "--uts", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


@dataclass
class Running:
    name: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 45) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.output()):
                return m
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"{self.name}: no {pattern!r} in its output:\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, as ``docker stop`` does; None if it had to be killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # with the worker's pool
            self.process.wait(10)
            return None


@dataclass
class Stack:
    env: dict[str, str]
    tmp: Path
    port: int
    worker_host: str
    migrate: subprocess.CompletedProcess | None = None
    running: dict[str, Running] = field(default_factory=dict)

    def localize(self, text: str) -> str:
        """Compose's substitution from .env, then container-only paths and the
        bind address mapped to this machine."""
        text = interpolate(text, self.env)
        text = text.replace("0.0.0.0:8000", f"127.0.0.1:{self.port}")
        text = re.sub(r"(?<![\w/.])/tmp(?=/)", str(self.tmp), text)
        return re.sub(r"(?<![\w/.])/data(?=/|$)", self.env["MAILSESSIONS_VAR_DIR"], text)

    def command(self, argv: list[str]) -> list[str]:
        """A compose command as a local process: the program from the venv."""
        result = [self.localize(arg) for arg in argv]
        program = shutil.which(result[0], path=self.env["PATH"])
        assert program, result[0]
        if result[0] != "sh":
            assert Path(program).parent == VENV_BIN, program
        return [program, *result[1:]]

    def start(self, name: str, argv: list[str], hostname: str | None = None) -> Running:
        if hostname:
            # Its own UTS namespace, like a container: the worker's node name
            # is celery@<hostname>, unique on this machine.
            setter = "import os,socket,sys; socket.sethostname(sys.argv[1]); os.execvp(sys.argv[2], sys.argv[2:])"
            argv = ["unshare", "--uts", "--", sys.executable, "-c", setter, hostname, *argv]
        log = self.tmp / f"{name}.log"
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running[name] = Running(name, process, log)
        return self.running[name]

    def health(self, service: str, *extra: str) -> subprocess.CompletedProcess:
        """Run the service's compose health check here; exit 0 is healthy."""
        test = load_compose()["services"][service]["healthcheck"]["test"]
        env = {**self.env, "HOSTNAME": self.worker_host}
        if test[0] == "CMD-SHELL":
            argv = ["sh", "-c", self.localize(test[1])]
        else:
            argv = self.command(test[1:]) + list(extra)
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    import psycopg
    from cryptography.fernet import Fernet
    from django.core.management.utils import get_random_secret_key

    if not reachable(5432):
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432 (scripts/services.sh starts it)")
    if not reachable(6379):
        pytest.skip("Redis does not answer on 127.0.0.1:6379 (scripts/services.sh starts it)")
    database = f"mailsessions_compose_{secrets.token_hex(4)}"
    admin_url = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    tmp = tmp_path_factory.mktemp("compose")
    (tmp / "data").mkdir()
    unique = secrets.token_hex(4)
    env = container_env(
        tmp / "data",
        {
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
            "CELERY_TASK_DEFAULT_QUEUE": f"compose-test-{unique}",
            "SECRET_KEY": get_random_secret_key(),
            "MAILSESSIONS_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "ALLOWED_HOSTS": "127.0.0.1",
            "WEB_CONCURRENCY": "1",
            "WORKER_CONCURRENCY": "1",
        },
    )
    host = f"mailsessions-compose-{unique}" if can_unshare_uts() else socket.gethostname()
    s = Stack(env=env, tmp=tmp, port=free_port(), worker_host=host)
    services = load_compose()["services"]
    try:
        s.migrate = subprocess.run(
            s.command(services["migrate"]["command"]),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if s.migrate.returncode == 0:
            s.start("web", s.command(services["web"]["command"]))
            worker_host = host if host != socket.gethostname() else None
            s.start("worker", s.command(services["worker"]["command"]), hostname=worker_host)
            s.start("beat", s.command(services["beat"]["command"]))
        yield s
    finally:
        for running in s.running.values():
            running.stop(timeout=5)
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def http(stack: Stack, url_path: str, *, https: bool = False, **kw: Any):
    import requests

    headers = {"X-Forwarded-Proto": "https"} if https else {}
    headers.update(kw.pop("headers", {}))
    url = f"http://127.0.0.1:{stack.port}{url_path}"
    deadline = time.monotonic() + 30
    while True:
        try:
            return requests.get(url, headers=headers, timeout=10, allow_redirects=False, **kw)
        except requests.ConnectionError:
            if time.monotonic() > deadline or stack.running["web"].process.poll() is not None:
                raise


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_migrate_service_migrates_and_collects_static(stack):
    assert stack.migrate.returncode == 0, stack.migrate.stdout + stack.migrate.stderr
    assert "Applying django_celery_beat" in stack.migrate.stdout
    manifest = Path(stack.env["MAILSESSIONS_VAR_DIR"]) / "staticfiles" / "staticfiles.json"
    assert manifest.is_file(), "collectstatic did not write the whitenoise manifest"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_web_serves_health_pages_and_static_files(stack):
    assert stack.migrate.returncode == 0
    stack.running["web"].wait_for(r"Booting worker")
    assert "Control socket listening" not in stack.running["web"].output()
    # The compose health check itself, over plain HTTP like inside the container.
    probe = stack.health("web", f"http://127.0.0.1:{stack.port}/healthz")
    assert probe.returncode == 0, probe.stdout + probe.stderr + stack.running["web"].output()
    response = http(stack, "/healthz")
    assert (response.status_code, response.text) == (200, "ok")

    # Production redirects plain HTTP; the TLS proxy says https and gets the page.
    plain = http(stack, "/accounts/login/")
    assert plain.status_code == 301
    assert plain.headers["Location"].startswith("https://")
    page = http(stack, "/accounts/login/", https=True)
    assert page.status_code == 200
    assert "max-age=" in page.headers["Strict-Transport-Security"]
    css = re.search(r'href="(/static/[^"]+\.css)"', page.text)
    assert css, "no stylesheet link on the login page"
    assert re.search(r"\.[0-9a-f]{12}\.css$", css.group(1)), "not a hashed (manifest) name"
    static = http(stack, css.group(1), https=True, headers={"Accept-Encoding": "gzip"})
    assert static.status_code == 200
    assert static.headers["Content-Type"].startswith("text/css")
    assert "immutable" in static.headers["Cache-Control"]
    assert static.headers.get("Content-Encoding") == "gzip"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_worker_consumes_the_queue_and_answers_its_health_check(stack):
    assert stack.migrate.returncode == 0
    worker = stack.running["worker"]
    worker.wait_for(rf"celery@{re.escape(stack.worker_host)} ready")
    assert f".> {stack.env['CELERY_TASK_DEFAULT_QUEUE']}" in worker.output()
    assert "concurrency: 1 (prefork)" in worker.output()
    check = stack.health("worker")
    assert check.returncode == 0, check.stdout + check.stderr
    # A task sent with the web's settings reaches this worker through the broker.
    sent = subprocess.run(
        [str(VENV_BIN / "celery"), "-A", "mailsessions", "call", "celery.accumulate"],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    worker.wait_for(rf"Task celery\.accumulate\[{re.escape(sent.stdout.strip())}\] succeeded")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_beat_uses_the_database_scheduler_and_stays_up(stack):
    assert stack.migrate.returncode == 0
    beat = stack.running["beat"]
    beat.wait_for(r"scheduler -> django_celery_beat\.schedulers\.DatabaseScheduler")
    beat.wait_for(r"beat: Starting")
    time.sleep(2)
    assert beat.process.poll() is None, beat.output()
    check = stack.health("beat")
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_check_deploy_is_clean(stack):
    result = subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_processes_stop_on_sigterm_and_health_checks_then_fail(stack):
    """Last: stops what the fixture started, as ``docker compose stop`` would."""
    assert stack.migrate.returncode == 0
    stack.running["worker"].wait_for(r" ready")
    stack.running["beat"].wait_for(r"beat: Starting")
    codes = {name: running.stop() for name, running in stack.running.items()}
    assert codes == {"web": 0, "worker": 0, "beat": 0}, codes
    assert stack.health("beat").returncode != 0
    assert stack.health("web", f"http://127.0.0.1:{stack.port}/healthz").returncode != 0
    if stack.worker_host != socket.gethostname():
        # Only with a unique node name: another celery@<this machine> may run.
        assert stack.health("worker").returncode != 0
