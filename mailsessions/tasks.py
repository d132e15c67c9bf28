"""Celery tasks: take ids, call one service, own retries and time limits."""

from __future__ import annotations

from celery import shared_task

from mailsessions import services


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150, ignore_result=True)
def run_connection_test(test_id: str) -> None:
    services.connection_test_run(test_id=test_id)
