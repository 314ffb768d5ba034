"""Micro-batching: concurrent requests share one model pass.

    batcher = MicroBatcher(store.predict, max_batch=32, max_wait_s=0.005)
    rows = await batcher.submit(images)     # one result per image, computed with other requests' images

A request's images join a queue. A worker takes the first waiting request, then waits at most
`max_wait_s` for more, until `max_batch` images are gathered, and runs them all in one call of `run`
on its compute thread. Requests that arrive while batches compute form the next ones, so under load
batches fill up without waiting, and alone a request waits only `max_wait_s`. A request is never
split: one larger than `max_batch` runs as a batch of its own. When a batch fails, each of its requests
runs again alone, so a request whose image breaks the model gets its own error and the others their
answers. All model work runs on the `workers` compute threads (`compute` runs other work there, such as
explanations), so however many requests arrive, at most `workers` model calls run at once: one on a GPU;
on a CPU, where a convnet gains little from larger batches, a few, each with a small batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

#: Defaults for a CPU, where a convnet's time per image hardly falls with the batch size and two
#: compute threads keep two cores busy (docs/benchmarks.md, "Serving"); on a GPU one worker and larger
#: batches (32) fit better.
DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_WAIT_S = 0.005
DEFAULT_WORKERS = 2


@dataclass
class BatchStats:
    """What the batcher has done: batches run, images and requests in them, the largest batch."""

    batches: int = 0
    images: int = 0
    requests: int = 0
    largest: int = 0
    seconds: float = 0.0  # compute time of all batches
    sizes: list[int] = field(default_factory=list)  # images per batch, the most recent 1000

    def record(self, images: int, requests: int, seconds: float) -> None:
        self.batches += 1
        self.images += images
        self.requests += requests
        self.largest = max(self.largest, images)
        self.seconds += seconds
        self.sizes = [*self.sizes[-999:], images]


class MicroBatcher:
    """Gathers concurrent `submit` calls into batches for `run(items) -> results` (one result per item,
    in order), run on `workers` compute threads (one batch each at a time; each runs `thread_setup`
    first, such as `qtl.utils.threads.share_cores`). Create it anywhere; its workers start with the
    first submit, in the running event loop."""

    def __init__(
        self,
        run: Callable[[list], Sequence],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        workers: int = DEFAULT_WORKERS,
        thread_setup: Callable[[], object] | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be at least 0, got {max_wait_s}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.run, self.max_batch, self.max_wait_s, self.workers = run, max_batch, max_wait_s, workers
        self.stats = BatchStats()
        self._executor = ThreadPoolExecutor(workers, "qtl-compute", initializer=thread_setup)
        self._queue: asyncio.Queue | None = None
        self._tasks: list[asyncio.Task] = []

    @property
    def pending(self) -> int:
        """Requests waiting for a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, items: list) -> list:
        """The results of `run` for `items`, computed in a batch with other requests' items."""
        if not items:
            return []
        if not self._tasks or all(task.done() for task in self._tasks):
            loop = asyncio.get_running_loop()
            self._queue = asyncio.Queue()
            self._tasks = [loop.create_task(self._work()) for _ in range(self.workers)]
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((list(items), future))
        return await future

    async def compute(self, fn: Callable, *args):
        """`fn(*args)` on the compute thread, between batches."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        carry = None  # a request that did not fit the last batch opens the next one
        while True:
            first, carry = carry or await queue.get(), None
            batch, size = [first], len(first[0])
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch:
                try:  # whatever already waits joins at once, the rest until the deadline
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        item = await asyncio.wait_for(queue.get(), deadline - loop.time())
                    except asyncio.TimeoutError:
                        break
                if size + len(item[0]) > self.max_batch:
                    carry = item
                    break
                batch.append(item)
                size += len(item[0])
            await self._run(batch, size)

    async def _run(self, batch: list, size: int) -> None:
        items = [x for request, _ in batch for x in request]
        t0 = time.perf_counter()
        try:
            results = await self.compute(self.run, items)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
                return
            # one request's item may have failed the batch: each request runs alone, so it gets its own
            # answer or its own error, never another request's
            for request, future in batch:
                if not future.done():
                    await self._run([(request, future)], len(request))
            return
        self.stats.record(size, len(batch), time.perf_counter() - t0)
        start = 0
        for request, future in batch:
            _settle(future, list(results[start : start + len(request)]))
            start += len(request)

    def close(self) -> None:
        """Stop the workers and the compute threads (pending requests are cancelled)."""
        for task in self._tasks:
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _settle(future: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    """Give `future` its result or error, unless its client went away (a cancelled future)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
