"""Read Mail: fetch messages from a session's mailbox and store them.

The task layer calls :func:`mailsessions.runs.run_start` (when the user or the schedule asks)
and later :func:`operation_read` (in the worker). ``operation_read`` records
every outcome on the :class:`~mailsessions.models.Run` and never raises a
:class:`~mailsessions.backends.base.BackendError`; whether retrying could help
is returned as ``run.retryable`` (a plain attribute, not a column).

Order of things, chosen so that no mail is ever lost:

1. search (incrementally: IMAP asks only for UIDs above the highest stored
   one in the same UIDVALIDITY, POP3/EWS exclude the ids already stored);
2. fetch and parse one batch (``backend.batch_size`` messages);
3. store the batch in one transaction (rows, raw files, attachments);
4. only then apply the "after read" action (mark read / move / delete) to
   exactly the messages that were stored.

A crash between 3 and 4 leaves mail on the server that is already stored;
the next run skips it as a duplicate instead of losing it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.db import DatabaseError, transaction
from django.db.models import BigIntegerField, CharField, Max, Value
from django.db.models.fields.files import FieldFile
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from mailsessions import mime, policy
from mailsessions.backends import get_backend_class
from mailsessions.backends.base import (
    FetchedMessage,
    Flag,
    IncomingBackend,
    SearchCriteria,
)
from mailsessions.diagnostics import endpoint
from mailsessions.models import (
    AfterRead,
    Operation,
    OperationKind,
    Run,
    RunStatus,
    StoredAttachment,
    StoredMessage,
)
from mailsessions.runs import run_recorded

logger = logging.getLogger(__name__)

# SearchCriteria fields that select on headers or flags; a backend that cannot
# evaluate them (POP3, see its SERVER_SIDE_CRITERIA) leaves them to us.
HEADER_CRITERIA = (
    "unseen_only",
    "from_contains",
    "to_contains",
    "subject_contains",
    "since",
    "before",
)
UNSEEN_NOTE = (
    "Note: “Only unread messages” was ignored: {protocol} does not tell which messages were read."
)


@dataclass
class _Tally:
    found: int = 0
    read: int = 0
    stored: int = 0
    duplicates: int = 0
    changed: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "found": self.found,
            "read": self.read,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "changed": self.changed,
            "failed": self.failed,
        }


# --- public API -------------------------------------------------------------------


def operation_read(*, run: Run) -> Run:
    """Execute the Read Mail operation of ``run`` and record the outcome on it.

    Returns the run reloaded from the database, with an extra attribute
    ``retryable`` (bool): True when the run failed for a reason that may pass
    (timeout, dropped connection, temporary server reply), so a task may retry
    it; False otherwise (including on success).

    Status: ``succeeded`` when every selected message was stored (or already
    was), ``partly_failed`` when some messages could not be stored or the
    server failed after some were stored, ``failed`` when nothing could be
    done; ``error`` then says why in words a person can act on.
    """
    tally = _Tally()
    clock = time.monotonic()
    run, retryable = run_recorded(
        run=run,
        kind=OperationKind.READ,
        body=lambda: _read(run.operation, run, tally),
        finish=lambda error: _finish(run, tally, clock, error),
    )
    # Retrying is safe after a partial read too: stored messages are skipped.
    run.retryable = bool(retryable) and tally.failed == 0
    return run


# --- the flow ---------------------------------------------------------------------


def _finish(run: Run, tally: _Tally, clock: float, error: str) -> Run:
    if error:
        status = RunStatus.PARTLY_FAILED if tally.stored else RunStatus.FAILED
    elif tally.failed:
        status = RunStatus.PARTLY_FAILED
        error = f"{tally.failed} message(s) could not be stored; see the log for details."
    else:
        status = RunStatus.SUCCEEDED
    text = "\n".join([error, *tally.notes]).strip()
    Run.objects.filter(pk=run.pk).update(
        status=status,
        finished=timezone.now(),
        duration_ms=int((time.monotonic() - clock) * 1000),
        error=text,
        **tally.counts(),
    )
    run.refresh_from_db()
    return run


def _read(operation: Operation, run: Run, tally: _Tally) -> None:
    session = operation.session
    folder = operation.folder or "INBOX"
    backend_class = get_backend_class(session.in_protocol)
    config = session.incoming_config()
    host, port, _ = endpoint(session.in_protocol, config)
    policy.ensure_allowed(host, port)
    with backend_class(config) as backend:
        assert isinstance(backend, IncomingBackend)
        info = backend.folder_info(folder)
        # Only IMAP has a UIDVALIDITY; 0 stands for "none" (see StoredMessage).
        uidvalidity = info.uidvalidity or 0
        already = StoredMessage.objects.filter(
            session=session, folder=folder, uidvalidity=uidvalidity
        )
        _finish_pending(backend, already, folder, tally)
        server_side = getattr(backend, "SERVER_SIDE_CRITERIA", None)
        local = _local_criteria(operation, server_side)
        if "unseen_only" in local:
            local.discard("unseen_only")
            tally.notes.append(UNSEEN_NOTE.format(protocol=session.get_in_protocol_display()))

        criteria = _criteria(operation, server_side)
        # "UID above the highest stored" is the cheap incremental read, but a
        # limit may have skipped older UIDs: then exclude the stored ids instead.
        if info.uidvalidity is not None and not operation.max_count:
            highest = already.aggregate(top=Max(Cast("server_id", output_field=BigIntegerField())))[
                "top"
            ]
            criteria = replace(criteria, min_uid=(highest or 0) + 1)
        else:
            ids_stored = frozenset(already.values_list("server_id", flat=True))
            criteria = replace(criteria, exclude_ids=ids_stored)

        # With filters applied after parsing, max_count can only be applied then.
        limit = operation.max_count if not local else None
        ids = backend.search(folder, criteria, newest_first=operation.newest_first, limit=limit)
        if not local:
            tally.found = len(ids)

        step = max(1, backend.batch_size)
        chunks = [ids[start : start + step] for start in range(0, len(ids), step)]
        # One thread owns the connection while reading: it fetches batch k+1
        # while this thread parses and stores batch k (socket reads and TLS
        # release the GIL), and runs the after-read actions in order behind
        # the fetches. Database work stays on this thread; at most two
        # batches are in memory at once.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mail-read") as wire:
            pending = wire.submit(_fetch_list, backend, folder, chunks[0]) if chunks else None
            for index in range(len(chunks)):
                batch = pending.result()
                pending = (
                    wire.submit(_fetch_list, backend, folder, chunks[index + 1])
                    if index + 1 < len(chunks)
                    else None
                )
                if not _read_batch(
                    operation, run, folder, uidvalidity, local, batch, tally, backend, wire
                ):
                    break
        commit = getattr(backend, "commit", None)
        if operation.after_read == AfterRead.DELETE and callable(commit):
            # POP3 deletes only at QUIT: confirm it here instead of in close(),
            # which cannot report a failure.
            commit()


def _fetch_list(backend: IncomingBackend, folder: str, ids: list[str]) -> list[FetchedMessage]:
    return list(backend.fetch(folder, ids))


def _read_batch(
    operation: Operation,
    run: Run,
    folder: str,
    uidvalidity: int,
    local: set[str],
    batch: list[FetchedMessage],
    tally: _Tally,
    backend: IncomingBackend,
    wire: ThreadPoolExecutor,
) -> bool:
    """Parse, store and act on one fetched batch; False when the limit is reached."""
    session = operation.session
    tally.read += len(batch)
    parsed = [
        (
            fetched,
            mime.parse_message(
                fetched.raw,
                max_attachment_size=operation.attachment_size_cap,
                save_attachments=operation.save_attachments,
            ),
        )
        for fetched in batch
    ]
    if local:
        parsed = [(f, p) for f, p in parsed if _matches(operation, p, local)]
        if operation.max_count is not None:
            parsed = parsed[: operation.max_count - tally.found]
        tally.found += len(parsed)
    stored_ids = _store_batch(run, session, folder, uidvalidity, parsed, tally)
    if stored_ids:
        _after_read(backend, wire, operation, folder, stored_ids, tally)
    return not (local and operation.max_count is not None and tally.found >= operation.max_count)


def local_criteria(operation: Operation, server_side: frozenset[str] | None) -> set[str]:
    """The header criteria set on ``operation`` that the backend leaves to us."""
    if server_side is None:  # the backend evaluates every criterion itself
        return set()
    return {
        name
        for name in HEADER_CRITERIA
        if name not in server_side and getattr(operation, name) not in ("", None, False)
    }


def search_criteria(operation: Operation, server_side: frozenset[str] | None) -> SearchCriteria:
    """The operation's filters as SearchCriteria, limited to what the backend applies."""
    values = {
        "unseen_only": operation.unseen_only,
        "from_contains": operation.from_contains,
        "to_contains": operation.to_contains,
        "subject_contains": operation.subject_contains,
        "since": operation.since,
        "before": operation.before,
        "larger_than": operation.larger_than,
    }
    if server_side is not None:
        # Pass only what the backend applies, so nothing looks filtered that is not.
        values = {k: v for k, v in values.items() if k in server_side}
    return SearchCriteria(**values)


def matches_locally(operation: Operation, parsed: mime.ParsedMessage, local: set[str]) -> bool:
    """The header criteria a server could not apply, evaluated on the parsed message."""

    def contains(haystack: str, needle: str) -> bool:
        return needle.casefold() in haystack.casefold()

    if "from_contains" in local and not contains(parsed.from_addr, operation.from_contains):
        return False
    if "to_contains" in local and not contains(", ".join(parsed.to), operation.to_contains):
        return False
    if "subject_contains" in local and not contains(parsed.subject, operation.subject_contains):
        return False
    if "since" in local or "before" in local:
        if parsed.date is None:
            return False  # undated mail cannot be said to fall inside the range
        day = parsed.date.date()
        if "since" in local and day < operation.since:
            return False
        if "before" in local and day >= operation.before:
            return False
    return True


# Public for Set Mail (mailsessions.changing), which selects messages the same way.
_local_criteria = local_criteria
_criteria = search_criteria
_matches = matches_locally


# --- storing ----------------------------------------------------------------------


def _message_row(
    run: Run, session, folder: str, uidvalidity: int, fetched: FetchedMessage, parsed
) -> StoredMessage:
    return StoredMessage(
        session=session,
        run=run,
        folder=folder,
        server_id=fetched.server_id,
        uidvalidity=uidvalidity,
        message_id=parsed.message_id[:998],
        from_addr=parsed.from_addr,
        to=", ".join(parsed.to),
        cc=", ".join(parsed.cc),
        date=parsed.date,
        subject=parsed.subject,
        flags=",".join(sorted(flag.value for flag in fetched.flags))[:100],
        size=fetched.size or len(fetched.raw),
        text_body=parsed.text_body,
        html_body=parsed.html_body,
        defects="\n".join(parsed.defects),
        pending_action=""
        if run.operation.after_read == AfterRead.LEAVE
        else run.operation.after_read,
        pending_target=run.operation.move_to if run.operation.after_read == AfterRead.MOVE else "",
    )


def _write_files(
    message: StoredMessage, fetched: FetchedMessage, parsed, written: list
) -> list[StoredAttachment]:
    """Write the raw message and its attachments; returns unsaved attachment rows.

    Every file written is appended to ``written`` so that a rolled-back batch
    can remove them again.
    """
    message.raw.save(f"{message.pk}.eml", ContentFile(fetched.raw), save=False)
    written.append(message.raw)
    rows = []
    for attachment in parsed.attachments:
        row = StoredAttachment(
            message=message,
            filename=attachment.filename[:255],
            content_type=attachment.content_type[:255],
            size=attachment.size,
            too_large=attachment.too_large,
        )
        if attachment.content is not None:
            # The sender chose the name: only a sanitised one reaches the disk.
            row.file.save(
                mime.safe_filename(attachment.filename), ContentFile(attachment.content), save=False
            )
            written.append(row.file)
        rows.append(row)
    return rows


def _store_batch(
    run: Run,
    session,
    folder: str,
    uidvalidity: int,
    parsed: Sequence[tuple[FetchedMessage, mime.ParsedMessage]],
    tally: _Tally,
) -> list[str]:
    """Store one batch; returns the server ids of the messages stored now."""
    if not parsed:
        return []
    ids = [fetched.server_id for fetched, _p in parsed]
    existing = set(
        StoredMessage.objects.filter(
            session=session, folder=folder, uidvalidity=uidvalidity, server_id__in=ids
        ).values_list("server_id", flat=True)
    )
    new = []
    seen: set[str] = set()
    for fetched, p in parsed:
        if fetched.server_id in existing or fetched.server_id in seen:
            tally.duplicates += 1
            continue
        seen.add(fetched.server_id)
        new.append((fetched, p))
    if not new:
        return []
    try:
        _store_together(run, session, folder, uidvalidity, new)
    except (DatabaseError, OSError, SuspiciousFileOperation):
        # One bad message (or a concurrent run storing the same one) must not
        # cost the whole batch: store them one by one.
        logger.warning("storing a batch of %d failed; retrying one by one", len(new), exc_info=True)
        stored = []
        for item in new:
            try:
                _store_together(run, session, folder, uidvalidity, [item])
            except (DatabaseError, OSError, SuspiciousFileOperation):
                already = StoredMessage.objects.filter(
                    session=session,
                    folder=folder,
                    uidvalidity=uidvalidity,
                    server_id=item[0].server_id,
                ).exists()
                if already:
                    tally.duplicates += 1
                else:
                    logger.exception("could not store message %s", item[0].server_id)
                    tally.failed += 1
                continue
            stored.append(item[0].server_id)
        tally.stored += len(stored)
        return stored
    tally.stored += len(new)
    return [fetched.server_id for fetched, _p in new]


def _store_together(
    run: Run,
    session,
    folder: str,
    uidvalidity: int,
    items: Iterable[tuple[FetchedMessage, mime.ParsedMessage]],
) -> None:
    """One transaction: the rows, then their files; files are removed on failure."""
    items = list(items)
    written: list = []
    rows: list[StoredMessage | StoredAttachment] = []
    try:
        with transaction.atomic():
            messages = StoredMessage.objects.bulk_create(
                [_message_row(run, session, folder, uidvalidity, f, p) for f, p in items]
            )
            rows += messages
            attachments: list[StoredAttachment] = []
            for message, (fetched, p) in zip(messages, items, strict=True):
                attachments += _write_files(message, fetched, p, written)
            rows += attachments
            _save_raw_names(session, messages)
            StoredAttachment.objects.bulk_create(attachments)
    except BaseException:
        for file in written:
            try:
                file.storage.delete(file.name)
            except Exception:
                logger.warning("could not remove %s after a failed batch", file.name)
        raise
    finally:
        _release(rows)


# The file field of each stored model, by model.
_FILE_FIELDS = {StoredMessage: "raw", StoredAttachment: "file"}


def _release(rows: Iterable[StoredMessage | StoredAttachment]) -> None:
    """Break the cycle row -> FieldFile -> row, so a stored batch is freed at once.

    Django caches the FieldFile of a file field in the instance's ``__dict__``
    and the FieldFile points back at the instance. Such cycles (each message
    row holding its decoded bodies) are freed only by a full garbage
    collection, which with Django's ~70,000 long-lived objects comes after
    many batches: a worker's peak grew by ~30 MiB from 1,000 to 10,000
    messages. Putting the plain file name back (what the descriptor stores
    before first access) leaves the row usable and reference counting frees
    it as soon as the batch is done.
    """
    for row in rows:
        name = _FILE_FIELDS[type(row)]
        value = row.__dict__.get(name)
        if isinstance(value, FieldFile):
            row.__dict__[name] = value.name


def _save_raw_names(session, messages: list[StoredMessage]) -> None:
    """Record the raw file names: one UPDATE when the storage kept the usual
    "<pk>.eml" names (bulk_update's CASE per row was a third of the store time)."""
    if not messages:
        return
    prefix = StoredMessage._meta.get_field("raw").upload_to(messages[0], "")
    usual = {m.pk for m in messages if m.raw.name == f"{prefix}{m.pk}.eml"}
    if usual:
        StoredMessage.objects.filter(pk__in=usual).update(
            raw=Concat(Value(prefix), Cast("pk", CharField()), Value(".eml"))
        )
    odd = [m for m in messages if m.pk not in usual]
    if odd:
        StoredMessage.objects.bulk_update(odd, ["raw"])


# --- after reading ----------------------------------------------------------------


def _after_read(
    backend: IncomingBackend,
    wire: ThreadPoolExecutor,
    operation: Operation,
    folder: str,
    ids: list[str],
    tally: _Tally,
) -> None:
    """Apply the operation's after-read action to messages already stored.

    The action runs on the connection's thread, after the fetch in flight.
    """
    if operation.after_read == AfterRead.LEAVE:
        return
    wire.submit(
        _apply_action, backend, operation.after_read, operation.move_to, folder, ids, tally
    ).result()
    StoredMessage.objects.filter(
        session=operation.session, folder=folder, server_id__in=ids
    ).update(pending_action="", pending_target="")


def _apply_action(backend, action: str, target: str, folder: str, ids: list[str], tally) -> None:
    if action == AfterRead.MARK_READ:
        tally.changed += backend.set_flags(folder, ids, add=[Flag.SEEN])
    elif action == AfterRead.MOVE:
        tally.changed += backend.move(folder, ids, target, create=True)
    elif action == AfterRead.DELETE:
        tally.changed += backend.delete(folder, ids)


def _finish_pending(backend: IncomingBackend, stored, folder: str, tally: _Tally) -> None:
    """Complete after-read actions a previous run stored but could not confirm
    (its worker died between storing and acting)."""
    pending = stored.exclude(pending_action="").values_list(
        "pk", "server_id", "pending_action", "pending_target"
    )
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for pk, server_id, action, target in pending:
        groups.setdefault((action, target), []).append((pk, server_id))
    for (action, target), rows in groups.items():
        _apply_action(backend, action, target, folder, [sid for _, sid in rows], tally)
        StoredMessage.objects.filter(pk__in=[pk for pk, _ in rows]).update(
            pending_action="", pending_target=""
        )
