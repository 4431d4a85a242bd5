"""Server-side batching of concurrent requests, as TF Serving's batching session.

Requests for one signature of one model version queue up; a batch thread
takes the first, waits up to `batch_timeout_micros` for more (without
exceeding `max_batch_size` rows), concatenates their inputs along the batch
dimension, runs the model once and hands each request its rows back.
A request larger than `max_batch_size` is split into several tasks (TF
Serving's large-batch splitting). Only requests whose inputs agree beyond
the batch dimension are merged. If a merged batch fails, its requests are
re-run one by one, so a bad request fails alone.

A request larger than the whole queue (`max_enqueued_batches` x
`max_batch_size` rows) can never fit: it fails INVALID_ARGUMENT naming the
limit (a 503 would invite retries). A request that reaches a batcher closed
by a version swap runs unbatched on its version instead of failing; one that
is still queued at its deadline is withdrawn and fails DEADLINE_EXCEEDED.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable, Mapping

import grpc
import numpy as np

from serving.server.config import BatchingParameters
from serving.server.errors import ServingError, invalid
from serving.server.limits import Deadline

log = logging.getLogger(__name__)

Arrays = Mapping[str, np.ndarray]
RunFn = Callable[[Arrays], dict]


class _Task:
    __slots__ = ("inputs", "size", "key", "done", "result", "error")

    def __init__(self, inputs: Arrays):
        self.inputs = inputs
        self.size = int(next(iter(inputs.values())).shape[0])
        # Tasks merge only when every input agrees beyond the batch dimension.
        self.key = tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(inputs.items()))
        self.done = threading.Event()
        self.result: dict | None = None
        self.error: BaseException | None = None


def _slice(inputs: Arrays, start: int, stop: int) -> dict:
    return {name: a[start:stop] for name, a in inputs.items()}


class Batcher:
    """Batches calls of `run` ({name: [b, ...] array} -> {name: [b, ...] array})."""

    def __init__(self, run: RunFn, params: BatchingParameters, name: str = "",
                 on_batch: Callable[[int], None] | None = None):
        self._run = run
        self.params = params
        self.name = name
        self._on_batch = on_batch
        self._queue: collections.deque[_Task] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"batch-{name}-{i}", daemon=True)
                         for i in range(params.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    @property
    def capacity(self) -> int:
        """Rows the queue holds at most."""
        return self.params.max_enqueued_batches * self.params.max_batch_size

    def __call__(self, inputs: Arrays, deadline: Deadline | None = None) -> dict:
        """Runs `inputs` as part of a batch; blocks until its rows are done."""
        size = int(next(iter(inputs.values())).shape[0])
        if size > self.capacity:
            raise invalid(f"the request has {size} rows, more than the batching queue holds ({self.capacity} = "
                          "max_enqueued_batches x max_batch_size in --batching_parameters_file)")
        step = self.params.max_batch_size
        tasks = [_Task(_slice(inputs, i, i + step)) for i in range(0, size, step)] or [_Task(inputs)]
        with self._cond:
            if self._closed:  # the version is being swapped out; it can still run this request
                closed = True
            else:
                closed = False
                pending = sum(t.size for t in self._queue)
                if pending + size > self.capacity:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                       "The batch scheduling queue to which this task was submitted is full")
                self._queue.extend(tasks)
                self._cond.notify_all()
        if closed:
            return self._run(inputs)
        for task in tasks:
            self._wait(task, tasks, deadline)
            if task.error is not None:
                raise task.error
        if len(tasks) == 1:
            return tasks[0].result
        return {name: np.concatenate([t.result[name] for t in tasks]) for name in tasks[0].result}

    def _wait(self, task: _Task, tasks: list[_Task], deadline: Deadline | None) -> None:
        if task.done.wait(deadline.remaining() if deadline else None):
            return
        with self._cond:
            queued = [t for t in tasks if t in self._queue]
            if queued and len(queued) == sum(not t.done.is_set() for t in tasks):
                for t in queued:  # none of the unfinished tasks has started: withdraw them
                    self._queue.remove(t)
                raise deadline.exceeded("waited in the batching queue")
        task.done.wait()  # already running: the model call itself is bounded by the size limits

    def close(self) -> None:
        """Stops the batch threads after the queued tasks have run."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)

    # ------------------------------------------------------------- threads

    def _next_batch(self) -> list[_Task] | None:
        params = self.params
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            batch = [self._queue.popleft()]
            size = batch[0].size
            deadline = time.monotonic() + params.batch_timeout_micros / 1e6
            while size < params.max_batch_size:
                if self._queue:
                    task = self._queue[0]
                    if task.key != batch[0].key or size + task.size > params.max_batch_size:
                        break
                    batch.append(self._queue.popleft())
                    size += task.size
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run_batch(batch)
            except BaseException as err:  # never lose a waiting request
                for task in batch:
                    if not task.done.is_set():
                        task.error = err
                        task.done.set()

    def _padded_size(self, size: int) -> int:
        for allowed in self.params.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size

    def _run_batch(self, batch: list[_Task]) -> None:
        size = sum(t.size for t in batch)
        names = list(batch[0].inputs)
        merged = {n: np.concatenate([t.inputs[n] for t in batch]) if len(batch) > 1 else batch[0].inputs[n]
                  for n in names}
        padded = self._padded_size(size)
        if padded > size:  # pad with copies of the first row; dropped below
            merged = {n: np.concatenate([a, np.repeat(a[:1], padded - size, axis=0)]) for n, a in merged.items()}
        if self._on_batch:
            self._on_batch(padded)
        try:
            outputs = self._run(merged)
            splittable = all(np.ndim(a) and np.shape(a)[0] == padded for a in outputs.values())
        except Exception as err:  # noqa: BLE001
            if len(batch) == 1:
                raise
            log.info("batch of %d requests failed (%s); re-running them one by one", len(batch), err)
            outputs, splittable = None, False
        if not splittable:
            if len(batch) == 1 and outputs is not None:
                batch[0].result = outputs
                batch[0].done.set()
                return
            for task in batch:  # one by one: a bad request fails alone
                try:
                    task.result = self._run(task.inputs)
                except Exception as err:  # noqa: BLE001
                    task.error = err
                task.done.set()
            return
        start = 0
        for task in batch:
            task.result = {n: a[start:start + task.size] for n, a in outputs.items()}
            start += task.size
            task.done.set()
