"""A worker-like process that runs one Read Mail and reports time and peak RSS.

Started by :mod:`bench.run` once per measurement, so each read starts from a
fresh interpreter (the peak resident set size of a process only grows) with
its own throwaway database. Input: one JSON object in ``argv[1]``; output: one
JSON line on stdout.

Keys of the input: ``workdir`` (scratch directory), ``database_url`` (or
empty for a fresh SQLite file there), ``protocol`` ("imap" / "pop3"),
``port``, ``user``, ``password``; optional ``incremental`` (a number of new
messages to APPEND through ``imap_port`` after the full read, then read
again), ``profile`` (a path to write a pyinstrument report to),
``rss_every`` (seconds: sample the resident set size through the read and
report the samples) and ``tracemalloc`` (a number of lines: trace Python
allocations during the read and report the peak and the biggest holders left
at the end; slow, for finding what grows with N).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
import tracemalloc
from pathlib import Path


def setup_django(workdir: Path, database_url: str = "") -> None:
    """Point the project's settings at scratch storage, then migrate."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["DJANGO_SETTINGS_MODULE"] = "mailsessions.settings"
    os.environ["MAILSESSIONS_VAR_DIR"] = str(workdir / "var")
    os.environ["MEDIA_ROOT"] = str(workdir / "media")
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # As a production worker runs: with DEBUG on, Django keeps every SQL
    # statement (bulk INSERTs with whole bodies) and memory grows with N.
    os.environ["DEBUG"] = "False"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def read_operation(spec: dict):
    """A saved READ session + operation for the bench mailbox (as the wizard makes them)."""
    from django.contrib.auth import get_user_model

    from mailsessions.models import Mode, Operation, OperationKind
    from tests.factories import make_session

    owner, _ = get_user_model().objects.get_or_create(username="bench")
    session = make_session(
        owner,
        mode=Mode.READ,
        name=f"bench {spec['protocol']}",
        in_protocol=spec["protocol"],
        in_encryption="ssl",
        in_host="127.0.0.1",
        in_port=spec["port"],
        in_username=spec["user"],
        in_verify_certificate=False,
    )
    session.set_in_password(spec["password"])
    session.save()
    return Operation.objects.create(
        session=session, name="bench read", kind=OperationKind.READ, folder="INBOX"
    )


def timed_read(operation) -> tuple[float, object]:
    from mailsessions import reading, runs

    run = runs.run_start(operation=operation)
    started = time.perf_counter()
    run = reading.operation_read(run=run)
    return time.perf_counter() - started, run


def append_new(spec: dict, count: int) -> None:
    from imapclient import IMAPClient

    from bench.generate import generate

    client = IMAPClient("127.0.0.1", spec["imap_port"], ssl=False, timeout=30)
    try:
        client.login(spec["user"], spec["password"])
        for raw in generate(count, seed=4242):
            client.append("INBOX", raw)
    finally:
        client.logout()


def maxrss_bytes() -> int:
    """This process's peak resident set size.

    VmHWM, not ``ru_maxrss``: Linux carries ``ru_maxrss`` across execve, so a
    child started by a parent of 150 MiB reports at least 150 MiB, and the
    bench parent grows with N (it has just run the naive reader over N
    messages). VmHWM belongs to the address space the exec created.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler(threading.Thread):
    """Samples this process's resident set size every ``every`` seconds."""

    def __init__(self, every: float) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()
        self.started_at = time.perf_counter()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.samples.append((round(time.perf_counter() - self.started_at, 2), rss_bytes()))


def top_allocations(before, after, lines: int) -> list[str]:
    stats = after.compare_to(before, "lineno")
    return [str(stat) for stat in stats[:lines]]


def main(argv: list[str]) -> dict:
    spec = json.loads(argv[1])
    setup_django(Path(spec["workdir"]), spec.get("database_url", ""))
    operation = read_operation(spec)
    rss_before = maxrss_bytes()
    sampler = None
    if spec.get("rss_every"):
        sampler = RssSampler(spec["rss_every"])
        sampler.start()
    if spec.get("tracemalloc"):
        tracemalloc.start()
        traced_before = tracemalloc.take_snapshot()
    profiler = None
    if spec.get("profile"):
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002)
        profiler.start()
    seconds, run = timed_read(operation)
    if profiler is not None:
        profiler.stop()
        Path(spec["profile"]).write_text(profiler.output_text(unicode=True, show_all=False))
    out = {
        "seconds": seconds,
        "status": run.status,
        "error": run.error,
        "found": run.found,
        "read": run.read,
        "stored": run.stored,
        "rss_before": rss_before,
        "maxrss": maxrss_bytes(),
    }
    if sampler is not None:
        sampler.done.set()
        sampler.join()
        out["rss_samples"] = sampler.samples
    if spec.get("tracemalloc"):
        out["traced_peak"] = tracemalloc.get_traced_memory()[1]
        out["traced_left"] = top_allocations(
            traced_before, tracemalloc.take_snapshot(), spec["tracemalloc"]
        )
        tracemalloc.stop()
    if spec.get("incremental"):
        append_new(spec, spec["incremental"])
        seconds, run = timed_read(operation)
        out["incremental"] = {
            "seconds": seconds,
            "status": run.status,
            "read": run.read,
            "stored": run.stored,
        }
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    print(json.dumps(main(sys.argv)))
