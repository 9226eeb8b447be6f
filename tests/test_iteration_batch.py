"""workers/iteration_batch.py: writes queued in one loop iteration, made at its end."""

from __future__ import annotations

import gevent
import pytest

from workers.iteration_batch import IterationBatch


def test_items_run_together_after_the_iteration_in_the_order_queued() -> None:
    done: list[object] = []
    done_when_queued: list[list[object]] = []
    batch = IterationBatch(done.append)

    def queue_three() -> None:
        for item in ("a", "b", "c"):
            batch.add(item)
        done_when_queued.append(list(done))

    gevent.get_hub().loop.run_callback(queue_three)
    gevent.sleep(0)
    gevent.sleep(0)
    assert done_when_queued == [[]]  # nothing ran inside the callback that queued them
    assert done == ["a", "b", "c"]
    batch.add("d")  # a new iteration: a new run
    gevent.sleep(0)
    assert done == ["a", "b", "c", "d"]


def test_a_failing_item_does_not_strand_the_others(capsys: pytest.CaptureFixture) -> None:
    done: list[object] = []

    def run(item: object) -> None:
        if item == "bad":
            raise RuntimeError("this item fails")
        done.append(item)

    batch = IterationBatch(run)
    for item in ("a", "bad", "c"):
        batch.add(item)
    gevent.sleep(0)
    gevent.sleep(0)
    assert done == ["a", "c"]
    assert "this item fails" in capsys.readouterr().err
