"""Set Mail: change messages on the server (flags, move, copy, delete).

The task layer calls :func:`mailsessions.runs.run_start` and later
:func:`operation_set` (in the worker). Like ``operation_read``, it records
every outcome on the :class:`~mailsessions.models.Run`, never raises a
:class:`~mailsessions.backends.base.BackendError` and returns the reloaded
run with a plain ``retryable`` attribute.

Which messages:

* ``source_run`` set: the messages that run stored, per folder, by their
  server ids. IMAP ids are only meaningful within the UIDVALIDITY they were
  stored under: rows from another UIDVALIDITY are skipped (counted as failed,
  with a note) rather than acting on whatever message now has that UID. The
  Read filters are ignored then.
* otherwise the Read filters on ``folder`` (the same SearchCriteria and
  after-parse filtering as Read Mail, see :mod:`mailsessions.reading`).

What then: one batched backend call per folder. An action the protocol
cannot do (POP3 can only delete) fails the run before connecting, naming the
protocol: never a silent no-op.

Stored copies (``StoredMessage``):

* flag changes are mirrored into ``StoredMessage.flags`` (one cheap query);
* after a move, rows are left as they are: the message gets a new id in the
  target folder (IMAP UID, EWS item id) and the backends do not report it,
  so rewriting only ``folder`` would point the row at a wrong message. The
  run says so when stored messages were moved;
* after a delete, rows are kept: they are our copy, which is the point of
  having read them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.utils import timezone

from mailsessions import mime, policy
from mailsessions.backends import get_backend_class
from mailsessions.backends.base import (
    FEATURE_COPY,
    FEATURE_DELETE,
    FEATURE_FLAGS,
    FEATURE_MOVE,
    BackendError,
    Flag,
    IncomingBackend,
    NotSupported,
)
from mailsessions.diagnostics import endpoint
from mailsessions.models import (
    Operation,
    OperationKind,
    Run,
    RunStatus,
    SetAction,
    StoredMessage,
)
from mailsessions.reading import local_criteria, matches_locally, search_criteria
from mailsessions.runs import run_recorded

# What each action needs from the backend (IncomingBackend.features).
ACTION_FEATURE: dict[str, str] = {
    SetAction.MARK_READ: FEATURE_FLAGS,
    SetAction.MARK_UNREAD: FEATURE_FLAGS,
    SetAction.FLAG: FEATURE_FLAGS,
    SetAction.UNFLAG: FEATURE_FLAGS,
    SetAction.MOVE: FEATURE_MOVE,
    SetAction.COPY: FEATURE_COPY,
    SetAction.DELETE: FEATURE_DELETE,
}
# (flags to add, flags to remove) per flag action.
FLAG_CHANGES: dict[str, tuple[tuple[Flag, ...], tuple[Flag, ...]]] = {
    SetAction.MARK_READ: ((Flag.SEEN,), ()),
    SetAction.MARK_UNREAD: ((), (Flag.SEEN,)),
    SetAction.FLAG: ((Flag.FLAGGED,), ()),
    SetAction.UNFLAG: ((), (Flag.FLAGGED,)),
}
TARGET_ACTIONS = (SetAction.MOVE, SetAction.COPY)


@dataclass
class _Tally:
    found: int = 0
    read: int = 0
    changed: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)
    touched: list[int] = field(default_factory=list)  # stored copies of changed messages

    def counts(self) -> dict[str, int]:
        return {
            "found": self.found,
            "read": self.read,
            "changed": self.changed,
            "failed": self.failed,
        }


# --- public API -------------------------------------------------------------------


def operation_set(*, run: Run) -> Run:
    """Execute the Set Mail operation of ``run`` and record the outcome on it.

    Returns the run reloaded from the database, with an extra attribute
    ``retryable`` (bool): True only when the run failed for a reason that may
    pass (timeout, dropped connection, temporary server reply).

    Counts: ``found`` messages selected, ``changed`` messages the server
    applied the action to, ``failed`` selected messages it could not be
    applied to (gone from the server meanwhile, or stored under an outdated
    UIDVALIDITY). Status: ``succeeded`` when nothing failed, ``partly_failed``
    when some messages changed and something failed, ``failed`` when nothing
    could be changed; ``error`` then says why.
    """
    tally = _Tally()
    clock = time.monotonic()
    run, retryable = run_recorded(
        run=run,
        kind=OperationKind.SET,
        body=lambda: _set(run.operation, tally),
        finish=lambda error: _finish(run, tally, clock, error),
    )
    run.retryable = bool(retryable) and run.status == RunStatus.FAILED
    return run


# --- the flow ---------------------------------------------------------------------


def _finish(run: Run, tally: _Tally, clock: float, error: str) -> Run:
    if not error and tally.failed:
        error = f"{tally.failed} selected message(s) could not be changed."
    if error:
        status = RunStatus.PARTLY_FAILED if tally.changed else RunStatus.FAILED
    else:
        status = RunStatus.SUCCEEDED
    text = "\n".join([error, *tally.notes]).strip()
    if tally.touched:
        run.touched.add(*tally.touched)
    Run.objects.filter(pk=run.pk).update(
        status=status,
        finished=timezone.now(),
        duration_ms=int((time.monotonic() - clock) * 1000),
        error=text,
        **tally.counts(),
    )
    run.refresh_from_db()
    return run


def _check_action(operation: Operation, backend_class: type[IncomingBackend]) -> None:
    """Refuse, before connecting, what the protocol cannot do."""
    session = operation.session
    protocol = session.get_in_protocol_display()
    action = operation.set_action
    if action not in ACTION_FEATURE:
        raise BackendError(f"“{operation.name}” has no valid action: choose what to do.")
    features = backend_class.features
    if ACTION_FEATURE[action] not in features:
        possible = [f"“{a.label}”" for a in SetAction if ACTION_FEATURE[a] in features]
        raise NotSupported(
            f"{protocol} cannot “{SetAction(action).label}”: over {protocol} Set Mail can only "
            f"{' or '.join(possible) or 'read'}. This action needs IMAP or Exchange."
        )
    if action in TARGET_ACTIONS and not operation.target_folder.strip():
        raise BackendError("Enter the folder to move or copy the messages to.")
    if operation.source_run_id is None:
        server_side = getattr(backend_class, "SERVER_SIDE_CRITERIA", None)
        if "unseen_only" in local_criteria(operation, server_side):
            # Reading may ignore it with a note; changing (deleting!) a wider
            # selection than asked is not acceptable.
            raise NotSupported(
                f"{protocol} does not tell which messages were read: "
                "“Only unread messages” cannot select anything over it."
            )


def _set(operation: Operation, tally: _Tally) -> None:
    session = operation.session
    backend_class = get_backend_class(session.in_protocol)
    _check_action(operation, backend_class)
    config = session.incoming_config()
    host, port, _ = endpoint(session.in_protocol, config)
    policy.ensure_allowed(host, port)
    with backend_class(config) as backend:
        assert isinstance(backend, IncomingBackend)
        if operation.source_run_id is not None:
            batches = _select_stored(backend, operation, tally)
        else:
            folder = operation.folder or "INBOX"
            # Only IMAP has a UIDVALIDITY; 0 stands for "none" (see StoredMessage).
            uidvalidity = backend.folder_info(folder).uidvalidity or 0
            batches = {folder: (uidvalidity, _select_by_filters(backend, operation, folder, tally))}
        pending_commit = 0
        for folder, (uidvalidity, ids) in batches.items():
            if not ids:
                continue
            changed = _apply(backend, operation, folder, ids)
            tally.changed += changed
            tally.failed += len(ids) - changed
            if len(ids) > changed:
                tally.notes.append(
                    f"{len(ids) - changed} message(s) in {folder} were no longer on the server."
                )
            _sync_stored(operation, folder, uidvalidity, ids, tally)
            pending_commit += changed
        commit = getattr(backend, "commit", None)
        if operation.set_action == SetAction.DELETE and callable(commit):
            # POP3 deletes only at QUIT: confirm it here, where a failure can
            # still be recorded, instead of in close().
            try:
                commit()
            except BackendError:
                tally.changed -= pending_commit
                tally.failed += pending_commit
                raise


def _select_by_filters(
    backend: IncomingBackend, operation: Operation, folder: str, tally: _Tally
) -> list[str]:
    """Server ids in ``folder`` matching the operation's Read filters."""
    server_side = getattr(backend, "SERVER_SIDE_CRITERIA", None)
    local = local_criteria(operation, server_side)
    criteria = search_criteria(operation, server_side)
    limit = operation.max_count if not local else None
    ids = backend.search(folder, criteria, newest_first=operation.newest_first, limit=limit)
    if not local:
        tally.found = len(ids)
        return ids
    # Header filters the server cannot apply (POP3): fetch, parse, filter.
    selected: list[str] = []
    step = max(1, backend.batch_size)
    for start in range(0, len(ids), step):
        for fetched in backend.fetch(folder, ids[start : start + step]):
            tally.read += 1
            parsed = mime.parse_message(fetched.raw, save_attachments=False)
            if matches_locally(operation, parsed, local):
                selected.append(fetched.server_id)
        if operation.max_count is not None and len(selected) >= operation.max_count:
            break
    if operation.max_count is not None:
        selected = selected[: operation.max_count]
    tally.found = len(selected)
    return selected


def _select_stored(
    backend: IncomingBackend, operation: Operation, tally: _Tally
) -> dict[str, tuple[int, list[str]]]:
    """The source run's stored messages per folder: (uidvalidity, ids still valid)."""
    rows = StoredMessage.objects.filter(
        run_id=operation.source_run_id, session=operation.session
    ).values_list("folder", "uidvalidity", "server_id")
    by_folder: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for folder, uidvalidity, server_id in rows.order_by("folder", "id"):
        by_folder[folder].append((uidvalidity, server_id))
    batches: dict[str, tuple[int, list[str]]] = {}
    for folder, items in by_folder.items():
        current = backend.folder_info(folder).uidvalidity or 0
        ids = list(dict.fromkeys(sid for uv, sid in items if uv == current))
        stale = len(items) - len(ids)
        if stale:
            tally.failed += stale
            tally.notes.append(
                f"{stale} stored message(s) from {folder} were skipped: the folder was "
                "recreated on the server (its UIDVALIDITY changed), so their ids no longer "
                "name the same messages."
            )
        tally.found += len(ids)
        batches[folder] = (current, ids)
    return batches


def _apply(backend: IncomingBackend, operation: Operation, folder: str, ids: list[str]) -> int:
    """One batched call for the whole folder; returns how many messages changed."""
    action = operation.set_action
    if action in FLAG_CHANGES:
        add, remove = FLAG_CHANGES[action]
        return backend.set_flags(folder, ids, add=add, remove=remove)
    target = operation.target_folder.strip()
    if action == SetAction.MOVE:
        return backend.move(folder, ids, target, create=operation.create_folder)
    if action == SetAction.COPY:
        return backend.copy(folder, ids, target, create=operation.create_folder)
    if action == SetAction.DELETE:
        return backend.delete(folder, ids)
    raise NotSupported(f"unknown Set Mail action {action!r}")  # _check_action prevents it


def _sync_stored(
    operation: Operation, folder: str, uidvalidity: int, ids: Sequence[str], tally: _Tally
) -> None:
    """Mirror the change into our stored copies where that is cheap and exact."""
    action = operation.set_action
    rows = StoredMessage.objects.filter(
        session=operation.session, folder=folder, uidvalidity=uidvalidity, server_id__in=ids
    )
    tally.touched.extend(rows.values_list("pk", flat=True))
    if action in FLAG_CHANGES:
        add, remove = FLAG_CHANGES[action]
        changed = []
        for row in rows.only("pk", "flags"):
            flags = (set(filter(None, row.flags.split(","))) | set(add)) - set(remove)
            new = ",".join(sorted(flags))[:100]
            if new != row.flags:
                row.flags = new
                changed.append(row)
        StoredMessage.objects.bulk_update(changed, ["flags"])
    elif action == SetAction.MOVE and rows.exists():
        # The new ids are not reported by the server: keep the rows unchanged.
        tally.notes.append(
            "The stored copies of the moved messages still name their old folder: "
            "the server does not report their new ids."
        )
