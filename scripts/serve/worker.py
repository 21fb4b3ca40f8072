"""The batch worker: the one thread that touches the model, and its scheduler (who gets which decoding rows).

Continuous batching over `model.engine.BatchDecoder`: requests join the running batch between decoding steps. Every
choice of a request (its `n`) is one row. Rows are shared out fairly, every step:
- each request with work left is entitled to `max_batch_size // requests` rows (at least 1);
- free rows go to the request holding the fewest, oldest first, so a newcomer is served before extra samples of a
  request that already runs;
- when the batch is full and a request has fewer rows than its share, rows are taken back from the request holding
  the most (preemption by recompute, as vLLM does): the row is cancelled, and the choice later rejoins with its
  prompt plus the tokens it has already produced as the new prompt, with the rest of its budget, so the client
  sees one unbroken reply. The victim is the row with the fewest tokens, the cheapest to recompute.
Measured before (issue 27): one request with n=16, max_tokens=2000 held all 16 rows for 123 s and a short request
sent meanwhile had no answer after 120 s. Now the short one joins at the next step: the benchmark
(`scripts/bench_serve.py --fairness`) prints its time to first token.

A seeded request is reproducible when its choices start together (the usual case); a choice that had to wait for
a row or was preempted draws from a generator seeded with seed + a per-admission offset, so two choices never
repeat each other's samples.
"""
import asyncio
import collections
import itertools
import logging
import queue
import threading
import time
from typing import Dict, List, Optional

from model.constrain import Resumed
from model.engine import SamplingParams

log = logging.getLogger("minimind.serve")

SEED_STRIDE = 0x9E3779B97F4A7C15  # odd 64-bit constant: admission k of a seeded request uses seed + k * stride
_arrivals = itertools.count()


class Job:
    """One request on its way through the worker: n choices of one prompt, each decoded as one row at a time.

    The worker thread reads `cancelled` and `rows_done` every step; the request side sets them (client gone,
    stop string reached). Events go back through `loop.call_soon_threadsafe` onto the request's asyncio queue:
    ("tokens", [(choice, id), ...]), ("end", choice, "stop" | "length"), ("error", message).
    """

    def __init__(self, request_id: str, prompt_ids: list, n: int, max_tokens: int, temperature: float,
                 top_p: float, seed: Optional[int], ignore_eos: bool, loop: asyncio.AbstractEventLoop,
                 constraint=None):
        self.request_id, self.prompt_ids, self.n, self.max_tokens = request_id, prompt_ids, n, max_tokens
        self.constraint = constraint  # model/constrain.py: the grammar every choice follows (None: free)
        self.temperature, self.top_p, self.seed, self.ignore_eos = temperature, top_p, seed, ignore_eos
        self.loop, self.events = loop, asyncio.Queue()
        self.cancelled = False
        self.rows_done = [False] * n
        self.tokens_out = 0  # tokens decoded for this request so far (all rows)
        self.checked_at = time.monotonic()  # when the request side last asked whether its client is there
        # scheduler state, touched by the worker thread only
        self.arrival = next(_arrivals)
        self.pending: collections.deque = collections.deque(range(n))  # choices without a row
        self.generated: List[list] = [[] for _ in range(n)]  # each choice's tokens so far (what a resume re-feeds)
        self.running = 0  # rows held now
        self.admissions = 0  # add() calls made for this job (seed offsets)
        self.preempted = 0

    def sampling(self, max_new_tokens: Optional[int] = None, after: Optional[list] = None) -> SamplingParams:
        """This request's decoding settings; a seeded request samples from its own generator, so its output
        depends on its seed, not on the requests that share the batch. `after`: the tokens a resumed choice
        already produced, which its grammar state replays."""
        seed = None
        if self.seed is not None and self.temperature > 0:
            seed = (self.seed + self.admissions * SEED_STRIDE) % 2 ** 64 if self.admissions else self.seed
        constraint = self.constraint
        if constraint is not None and after:
            constraint = Resumed(constraint, after)
        return SamplingParams(max_new_tokens=max_new_tokens or self.max_tokens, temperature=max(self.temperature, 0.0),
                              top_p=self.top_p, seed=seed, stop_ids=[] if self.ignore_eos else None,
                              constraint=constraint)

    def send(self, event: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: the server is shutting down and nobody is listening
            self.cancelled = True

    def abandon(self) -> None:
        """The request side is done with this job: stop decoding whatever rows are still running."""
        if not all(self.rows_done):
            self.cancelled = True


class BatchWorker(threading.Thread):
    """The only thread that touches the model: one running decode batch whose rows the scheduler shares out.

    Each loop: take new jobs from the inbox, `_reap` rows whose request is done with them, `_schedule` (preempt,
    then admit), one decoder step, `_dispatch` its tokens. The queue between the event loop and this thread is a
    plain queue.Queue; results go back with call_soon_threadsafe (see Job.send).
    """

    def __init__(self, engine, max_batch_size: int, max_model_len: int):
        super().__init__(name="minimind-decoder", daemon=True)
        self.engine, self.max_batch_size, self.max_model_len = engine, max_batch_size, max_model_len
        self.inbox: "queue.Queue[Optional[Job]]" = queue.Queue()
        self.jobs: List[Job] = []  # jobs with a pending choice or a running row, oldest first (this thread only)
        self.rows: Dict[int, tuple] = {}  # decoder row id -> (job, choice index), for rows still streaming
        self.running_jobs = self.waiting = 0  # for /health, written by this thread
        self.admitted = 0  # jobs that got their first row so far
        self.decoder = None
        self._stopping = False

    def submit(self, job: Job) -> None:
        self.inbox.put(job)

    def stop(self) -> None:
        self.inbox.put(None)

    def waiting_jobs(self) -> int:
        return self.waiting + self.inbox.qsize()

    def _drain(self) -> None:
        while True:
            try:
                job = self.inbox.get_nowait()
            except queue.Empty:
                return
            if job is None:
                self._stopping = True
            else:
                self.jobs.append(job)

    def prepare(self) -> None:
        """Make the decoder and, on CUDA, compile and capture its decode step before the first request."""
        self.decoder = self.engine.batch(self.max_batch_size, self.max_model_len)
        if self.decoder.use_graphs:
            log.info("warming up the decode step (torch.compile: %s, CUDA graphs)", self.engine.compiled)
            self.decoder.warm_up()

    def run(self) -> None:
        if self.decoder is None:
            self.prepare()
        while not self._stopping:
            if self.decoder.idle and not self.jobs:
                job = self.inbox.get()  # nothing to do: sleep until a request comes
                if job is None:
                    return
                self.jobs.append(job)
            self._drain()
            self._reap()
            self._schedule()
            self.running_jobs = sum(1 for j in self.jobs if j.running)
            self.waiting = len(self.jobs) - self.running_jobs
            if self.decoder.idle:
                continue
            try:
                step = self.decoder.step()
            except Exception as e:  # report to every request of the batch and keep serving
                log.exception("decoding failed")
                for job in {id(j): j for j, _ in self.rows.values()}.values():
                    job.send(("error", f"generation failed: {type(e).__name__}: {e}"))
                    job.cancelled = True
                self.rows.clear()
                self.decoder.reset()
                self._reap()
            else:
                self._dispatch(step)

    # ------------------------------------------------------------------------------------------ scheduling

    def _reap(self) -> None:
        """Cancel rows whose request is done with them (client gone, stop string) and forget finished jobs."""
        gone = set()
        for r, (job, i) in list(self.rows.items()):
            if job.cancelled or job.rows_done[i]:
                if job.cancelled and id(job) not in gone:
                    gone.add(id(job))
                    log.info("request %s: client disconnected; stopped decoding after %d tokens",
                             job.request_id, job.tokens_out)
                del self.rows[r]
                job.running -= 1
                self.decoder.cancel(r)
        for job in self.jobs:
            if job.cancelled:
                if job.pending and not job.running and job.admissions == 0:
                    log.info("request %s: client left before decoding started", job.request_id)
                job.pending.clear()
            elif any(job.rows_done[i] for i in job.pending):  # a stop string ended a choice while it waited
                job.pending = collections.deque(i for i in job.pending if not job.rows_done[i])
        self.jobs = [j for j in self.jobs if j.pending or j.running]

    def _schedule(self) -> None:
        """Preempt rows from requests over their fair share while others wait below it, then hand out free rows."""
        if not self.jobs:
            return
        share = max(1, self.max_batch_size // len(self.jobs))
        # rows that requests below their share could use now; taken back only if the free rows do not cover them
        need = sum(min(len(j.pending), share - j.running) for j in self.jobs if j.running < share)
        while need > self.decoder.free_rows:
            hog = max(self.jobs, key=lambda j: (j.running, -j.arrival))
            if hog.running <= share or not self._preempt(hog):
                break
        # water-filling: one row at a time to the job holding the fewest (then the oldest), so a newcomer is never
        # behind a long `n`; each job's grant then joins in one add() so its fresh choices share one prefill
        grant: Dict[int, int] = {}
        free = self.decoder.free_rows
        while free > 0:
            wanting = [j for j in self.jobs if len(j.pending) > grant.get(id(j), 0)]
            if not wanting:
                break
            job = min(wanting, key=lambda j: (j.running + grant.get(id(j), 0), j.arrival))
            grant[id(job)] = grant.get(id(job), 0) + 1
            free -= 1
        for job in self.jobs:
            if grant.get(id(job)):
                self._start(job, grant[id(job)])

    def _preempt(self, job: Job) -> bool:
        """Take one row back from `job`: its choice goes back to pending and will resume where it stopped."""
        held = [(len(job.generated[i]), r, i) for r, (j, i) in self.rows.items() if j is job and job.generated[i]]
        if not held:  # its rows have not produced a token yet (just joined): nothing worth taking back this step
            return False
        _, r, i = min(held)
        del self.rows[r]
        self.decoder.cancel(r)  # the engine counts a cancelled row as free at once; it leaves at the next step
        job.running -= 1
        job.pending.appendleft(i)
        job.preempted += 1
        log.info("request %s: choice %d paused after %d tokens to make room for a waiting request",
                 job.request_id, i, len(job.generated[i]))
        return True

    def _start(self, job: Job, k: int) -> None:
        """Give `k` of the job's pending choices a row: fresh ones in one add() (one prefill, copied), resumed
        ones each with their prompt + the tokens they already produced (recompute) and the budget left."""
        take = [job.pending.popleft() for _ in range(k)]
        fresh = [i for i in take if not job.generated[i]]
        if job.admissions == 0:
            self.admitted += 1
        if fresh:
            rows = self.decoder.add([job.prompt_ids], job.sampling(), num_samples=len(fresh))
            job.admissions += 1
            for row, i in zip(rows, fresh):
                self.rows[row] = (job, i)
        for i in take:
            if job.generated[i]:
                left = job.max_tokens - len(job.generated[i])
                (row,) = self.decoder.add([job.prompt_ids + job.generated[i]], job.sampling(left, job.generated[i]))
                job.admissions += 1
                self.rows[row] = (job, i)
        job.running += k

    def _dispatch(self, step) -> None:
        """Send the step's tokens and ends to their requests."""
        per_job: Dict[Job, list] = {}
        for r, token_id in step.tokens:
            if r in self.rows:
                job, i = self.rows[r]
                per_job.setdefault(job, []).append((i, token_id))
                job.generated[i].append(token_id)
                job.tokens_out += 1
        for job, tokens in per_job.items():
            job.send(("tokens", tokens))
        for r, reason in step.finished:  # the engine's own reasons: stop id or length (preempted rows are gone)
            if r in self.rows:
                job, i = self.rows.pop(r)
                job.running -= 1
                job.rows_done[i] = True
                job.send(("end", i, reason))
