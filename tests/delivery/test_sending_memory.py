"""While a sender sends, the collector leaves the process's existing objects alone and runs
young collections less often; afterwards everything is as it was, nested or concurrent."""

from __future__ import annotations

import gc
import threading

from herald.delivery.sender import SENDING_GC_THRESHOLD, sending_memory


def test_sending_freezes_and_raises_the_threshold_then_restores_both() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with sending_memory():
        assert gc.get_freeze_count() > frozen  # what existed is out of the collector's way
        assert gc.get_threshold()[0] == max(before[0], SENDING_GC_THRESHOLD)
        with sending_memory():  # a nested sender changes nothing and restores nothing
            assert gc.get_threshold()[0] == max(before[0], SENDING_GC_THRESHOLD)
        assert gc.get_freeze_count() > frozen
        assert gc.get_threshold()[0] == max(before[0], SENDING_GC_THRESHOLD)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0  # unfrozen: collected as before


def test_cycles_made_while_sending_are_still_collected() -> None:
    class Node:
        other: object = None

    with sending_memory():
        first, second = Node(), Node()
        first.other, second.other = second, first
        del first, second
        gc.collect()  # a collection still finds cycles made while sending
        assert not any(isinstance(item, Node) for item in gc.get_objects())


def test_the_last_of_concurrent_senders_restores_the_defaults() -> None:
    before = gc.get_threshold()
    inside, release = threading.Barrier(3), threading.Event()

    def sender() -> None:
        with sending_memory():
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    inside.wait()
    assert gc.get_freeze_count() > 0
    release.set()
    for thread in threads:
        thread.join()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
