"""Celery tasks for notifications: thin, take ids; `deliver` re-reads the delivery and
leaves it alone unless it is pending and due, so a duplicate message sends nothing twice."""

from celery import shared_task

from approvals import notify
from approvals.models import Delivery


# One webhook POST (its own timeout) or one email.
@shared_task(name="approvals.deliver", soft_time_limit=90, time_limit=120)
def deliver_task(delivery_id: int) -> None:
    try:
        notify.deliver(delivery_id)
    except Delivery.DoesNotExist:  # its checkpoint's run was deleted since
        return


@shared_task(name="approvals.deliver_due", soft_time_limit=240, time_limit=300)
def deliver_due_task() -> int:
    """Periodic (beat): retries that are due and first attempts that were lost."""
    return notify.deliver_due()
