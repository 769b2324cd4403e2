"""Engine slots: at most ORCHESTRA_ENGINE_SLOTS threads of a process do engine work at once; a
thread waiting on its model gives its slot to another, and takes one again after; inside a
transaction it keeps it; tasks nested in a thread hold one slot."""

import threading

import pytest
from django.db import transaction

from orchestra import slots


@pytest.fixture
def two_slots(monkeypatch):
    monkeypatch.setattr(slots, "_slots", threading.BoundedSemaphore(2))
    return slots._slots


def _in_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_a_third_thread_waits_for_a_slot(two_slots):
    inside, leave, third_in = threading.Barrier(3), threading.Event(), threading.Event()

    def holder():
        with slots.engine_slot():
            inside.wait(10)
            leave.wait(10)

    def third():
        with slots.engine_slot():
            third_in.set()

    holders = [_in_thread(holder) for _ in range(2)]
    inside.wait(10)  # both slots taken
    waiting = _in_thread(third)
    assert not third_in.wait(0.3)
    leave.set()
    assert third_in.wait(10)
    for thread in [*holders, waiting]:
        thread.join(10)


def test_a_thread_waiting_on_its_model_lends_its_slot(two_slots):
    two_slots.acquire()  # one slot left, which this thread takes
    other_in, other_out = threading.Event(), threading.Event()

    def other():
        with slots.engine_slot():
            other_in.set()
            other_out.wait(10)

    with slots.engine_slot():
        with slots.waiting():
            thread = _in_thread(other)
            assert other_in.wait(10)  # it got the slot this thread gave back
            other_out.set()
        # Out of the wait, this thread has a slot again: the last one, so none is left.
        thread.join(10)
        assert not two_slots.acquire(timeout=0.1)
    two_slots.release()
    assert two_slots.acquire(timeout=1) and two_slots.acquire(timeout=1)


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_the_slot_is_kept(two_slots):
    two_slots.acquire()
    with slots.engine_slot(), transaction.atomic(), slots.waiting():
        # The last slot stays this thread's: nobody else may take it.
        assert not two_slots.acquire(timeout=0.1)
    two_slots.release()


def test_tasks_nested_in_a_thread_hold_one_slot(two_slots):
    with slots.engine_slot(), slots.engine_slot():
        assert two_slots.acquire(timeout=1)  # the second slot is still free
        two_slots.release()
        with slots.waiting():
            assert two_slots.acquire(timeout=1) and two_slots.acquire(timeout=1)
            two_slots.release()
            two_slots.release()
    assert two_slots.acquire(timeout=1) and two_slots.acquire(timeout=1)
