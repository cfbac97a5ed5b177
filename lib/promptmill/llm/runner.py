"""Send many paid requests concurrently, each at most once, within rate limits and a budget.

:class:`CallRunner` takes jobs (one request for one item), asks the ledger
before sending, sends with asyncio under ``--concurrency``/``--rpm``/``--tpm``,
retries what is worth retrying (tenacity, jittered exponential backoff, the
server's Retry-After honoured) and writes each result together with its ledger
row in one small transaction as it arrives. A provider (``openai_chat``,
``gemini``) turns its SDK's replies and errors into the shapes below; the SDKs'
own retries are turned off so attempts don't multiply.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import click

from promptmill.core.errors import BadInput, RunStopped
from promptmill.llm.ledger import Ledger, Outcome, PriceTable, Usage, idempotency_key, load_prices


class CallError(Exception):
    """A failed attempt. Carries what the server said, and the usage when it billed the attempt."""

    error_class = "error"

    def __init__(self, message: str, *, http_status: int | None = None, response: dict | None = None,
                 reply: Reply | None = None, error_class: str | None = None):
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.response = response
        self.reply = reply
        if error_class:
            self.error_class = error_class


class Transient(CallError):
    """Worth another attempt: 429, 408, 409, 5xx, timeouts, dropped connections, garbled bodies."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class Permanent(CallError):
    """Sending the same request again would fail the same way: 4xx, refusals, content filters."""


class Unparseable(CallError):
    """The reply could not be read as the answer asked for; tried again up to --parse-tries times."""

    error_class = "unparseable"


class QuotaExhausted(CallError):
    """The account can't pay for more requests: stop the whole run and say why."""

    error_class = "insufficient_quota"


@dataclass(kw_only=True)
class Reply(Usage):
    """One successful HTTP exchange, before its content is judged."""

    response: dict
    http_status: int = 200


@dataclass
class Job:
    """One request for one item. `request` is what the ledger stores and keys on (no secrets, images
    as their sha256); `payload`, when given, builds what is really sent (reading image bytes only then)."""

    request: dict
    item: str
    item_type: str | None = None
    item_id: int | None = None
    est_tokens_in: int = 0
    max_tokens_out: int = 0
    payload: object = None
    context: object = None


@dataclass
class CallSettings:
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    max_cost: float | None = None
    retry_failed: bool = False
    max_attempts: int = 6
    parse_tries: int = 3
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    timeout: float = 120.0


@dataclass
class DryRunReport:
    requests: int = 0
    already_paid: int = 0
    failed_before: int = 0
    to_send: int = 0
    estimated_cost: float | None = 0.0

    def line(self) -> str:
        cost = "unknown (no price for the model)" if self.estimated_cost is None else f"${self.estimated_cost:.4f}"
        failed = f", {self.failed_before:,} failed before (sent again only with --retry-failed)" \
            if self.failed_before else ""
        return (f"dry run: {self.requests:,} requests, {self.already_paid:,} already paid for{failed}, "
                f"{self.to_send:,} would be sent, estimated cost at most {cost}; nothing was sent")


class TokenBucket:
    """Refills at `per_minute / 60` per second, holds up to ten seconds' worth (at least one request)."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * 10)
        self.level = self.capacity
        self.updated = time.monotonic()

    def _refill(self):
        moment = time.monotonic()
        self.level = min(self.capacity, self.level + (moment - self.updated) * self.rate)
        self.updated = moment

    def wait_time(self, amount: float) -> float:
        self._refill()
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class RateLimiter:
    """Requests per minute and tokens per minute; a request bigger than the bucket waits for a full one."""

    def __init__(self, rpm: float | None, tpm: float | None):
        self.buckets = [(bucket, per_request) for bucket, per_request in (
            (TokenBucket(rpm), False) if rpm else (None, False),
            (TokenBucket(tpm), True) if tpm else (None, True)) if bucket]
        self.lock = asyncio.Lock()

    async def acquire(self, tokens: int):
        async with self.lock:
            while True:
                waits = [bucket.wait_time(tokens if per_token else 1) for bucket, per_token in self.buckets]
                delay = max(waits, default=0.0)
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            for bucket, per_token in self.buckets:
                bucket.level -= tokens if per_token else 1


@dataclass
class CallRunner:
    """Sends jobs through a provider, with the ledger in front and a writer behind.

    `write(conn, job, value, api_call_id)` stores a successful result; it runs in the same
    transaction as the ledger row, so a kill never leaves a paid response without its result."""

    store: object
    run: object
    provider: object
    settings: CallSettings
    prices: PriceTable
    write: Callable
    progress: object = None
    stop_reason: str | None = None
    fatal: bool = False
    spent: float = 0.0
    reserved: float = 0.0
    in_flight: int = 0
    claim_scope: str | None = None
    ledger: Ledger = field(init=False)

    def __post_init__(self):
        self.ledger = Ledger(self.store, self.run, self.prices)

    def key(self, job: Job) -> str:
        return idempotency_key(self.provider.name, self.provider.model, job.request, job.item)

    def estimate(self, job: Job) -> float | None:
        price = self.prices.lookup(self.provider.model)
        return None if price is None else price.cost(job.est_tokens_in, job.max_tokens_out)

    # --- dry run -------------------------------------------------------------------------------

    def dry_run(self, jobs: Iterable[Job]) -> DryRunReport:
        report = DryRunReport()
        for job in jobs:
            report.requests += 1
            found = self.ledger.find(self.key(job))
            if found and found["status"] == "ok":
                report.already_paid += 1
                continue
            if found and not self.settings.retry_failed:
                report.failed_before += 1
                continue
            report.to_send += 1
            estimate = self.estimate(job)
            report.estimated_cost = None if estimate is None or report.estimated_cost is None \
                else report.estimated_cost + estimate
        return report

    # --- the real thing --------------------------------------------------------------------------

    def run_jobs(self, jobs: Iterable[Job], should_stop: Callable[[], bool] = lambda: False,
                 hold: Callable[[], bool] = lambda: False):
        """Process every job (or until should_stop/budget/quota says stop). Raises RunStopped on quota.

        While `hold()` is true no new request starts: the answers under way, in this run or
        another, may be enough (augment's --target), and paying for more would be waste. A
        `hold` must turn false once nothing is in flight anywhere, or `should_stop` true."""
        try:
            asyncio.run(self._run(jobs, should_stop, hold))
        finally:
            # A database that can't be written now (full disk) keeps the claims; they lapse with the run.
            with contextlib.suppress(sqlite3.Error):
                self.ledger.release_all()
        if self.stop_reason:
            click.echo(f"stopped: {self.stop_reason}", err=True)
            if self.fatal:
                raise RunStopped(self.stop_reason)

    async def _run(self, jobs: Iterable[Job], should_stop, hold):
        self.limiter = RateLimiter(self.settings.rpm, self.settings.tpm)
        iterator = iter(jobs)
        self._renew_lease()  # before the first claim
        renewing = asyncio.create_task(self._keep_lease())

        async def worker():
            while not self.stop_reason and not should_stop():
                if hold():
                    await asyncio.sleep(0.005)
                    continue
                job = next(iterator, None)
                if job is None:
                    return
                self.in_flight += 1
                try:
                    await self._process(job)
                finally:
                    self.in_flight -= 1
                if self.progress is not None:
                    self.progress.update(1)

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, self.settings.concurrency))))
        finally:
            renewing.cancel()
            close = getattr(self.provider, "aclose", None)
            if close:
                await close()

    async def _keep_lease(self):
        """Renew the claim lease every quarter lease for as long as requests go on, however long each takes."""
        while True:
            await asyncio.sleep(self.ledger.lease / 4)
            with contextlib.suppress(sqlite3.OperationalError):  # the database busy: the next renewal is in time
                self._renew_lease()

    def _renew_lease(self):
        if not self.run.renew_lease(self.ledger.lease) and not self.stop_reason:
            self.fatal = True
            self.stop_reason = ("another host found this run's claim lease run out and took its requests over "
                                "(was the process stalled?)")

    async def _process(self, job: Job):
        key = self.key(job)
        state, found = self.ledger.claim(key, self.settings.retry_failed, self.claim_scope)
        if state == "paid":
            self._reuse(job, found)
            return
        if state == "failed":
            self.run.add("skipped: failed before (use --retry-failed)")
            return
        if state == "busy":
            self.run.add("skipped: in flight in another run")
            return
        stored = False
        try:
            stored = await self._send_claimed(job, key)
        finally:
            if not stored:
                with self.store.transaction() as conn:
                    self.ledger.release(conn, key)

    async def _send_claimed(self, job: Job, key: str) -> bool:
        """Send a claimed request and store its outcome; False when the budget stopped it first."""
        estimate = self.estimate(job)
        if self.settings.max_cost is not None and estimate is not None \
                and self.spent + self.reserved + estimate > self.settings.max_cost:
            if not self.stop_reason:
                self.stop_reason = (f"the next request (up to ${estimate:.4f}) would pass --max-cost "
                                    f"${self.settings.max_cost:.4f} (spent ${self.spent:.4f} in this run)")
                self.run.add("stopped: --max-cost reached")
            return False
        self.reserved += estimate or 0.0
        try:
            await self.limiter.acquire(job.est_tokens_in + job.max_tokens_out)
            outcome = await self._call(job)
        finally:
            self.reserved -= estimate or 0.0
        with self.store.transaction() as conn:
            api_call_id, cost = self.ledger.record(conn, key, self.provider.name, self.provider.model,
                                                   job.request, outcome, job.item_type, job.item_id)
            if outcome.status == "ok":
                self.write(conn, job, outcome.value, api_call_id)
            self.ledger.release(conn, key)
        self.spent += cost or 0.0
        self.run.add("requests sent", outcome.attempts)
        if outcome.status == "ok":
            self.run.add("calls ok")
        else:
            self.run.add(f"calls failed: {outcome.error_class}")
        if outcome.fatal and not self.stop_reason:
            self.fatal = True
            self.stop_reason = f"{outcome.error_class}: {outcome.error_message}"
        return True

    def _reuse(self, job: Job, row: dict):
        import json

        try:
            value = self.provider.parse(json.loads(row["response"]), job)
        except CallError as exc:
            self.run.add("stored responses unusable")
            click.echo(f"warning: stored response {row['id']} can't be used: {exc.message}", err=True)
            return
        with self.store.transaction() as conn:
            self.write(conn, job, value, row["id"])
        self.run.add("responses reused from the ledger")

    async def _call(self, job: Job) -> Outcome:
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

        settings = self.settings
        backoff = wait_exponential_jitter(initial=settings.backoff_base, max=settings.backoff_cap)
        parse_failures = 0
        usage = Outcome(status="failed", tokens_in=None, tokens_out=None)

        def should_retry(exc: BaseException) -> bool:
            if isinstance(exc, Unparseable):
                return parse_failures < settings.parse_tries
            return isinstance(exc, Transient)

        def wait(retry_state) -> float:
            exc = retry_state.outcome.exception()
            after = getattr(exc, "retry_after", None)
            if after is not None:
                return min(max(after, 0.0), settings.backoff_cap)
            return backoff(retry_state)

        retrying = AsyncRetrying(stop=stop_after_attempt(settings.max_attempts), wait=wait,
                                 retry=retry_if_exception(should_retry), reraise=True)
        attempts = 0
        started = time.monotonic()
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    started = time.monotonic()
                    try:
                        reply = await self.provider.send(job)
                        _add_usage(usage, reply)
                        value = self.provider.parse(reply.response, job)
                    except Unparseable:
                        parse_failures += 1
                        raise
                    except CallError as exc:
                        if exc.reply is not None:
                            _add_usage(usage, exc.reply)
                        raise
        except CallError as exc:
            last = exc.reply
            return Outcome(
                status="failed", response=exc.response if exc.response is not None else last and last.response,
                http_status=exc.http_status, attempts=attempts, error_class=exc.error_class,
                error_message=exc.message, tokens_in=usage.tokens_in, tokens_out=usage.tokens_out,
                tokens_cached=usage.tokens_cached, tokens_reasoning=usage.tokens_reasoning,
                resolved_model=last.resolved_model if last else None, request_id=last.request_id if last else None,
                latency_s=time.monotonic() - started, fatal=isinstance(exc, QuotaExhausted))
        return Outcome(
            status="ok", response=reply.response, http_status=reply.http_status, attempts=attempts,
            tokens_in=usage.tokens_in, tokens_out=usage.tokens_out, tokens_cached=usage.tokens_cached,
            tokens_reasoning=usage.tokens_reasoning, resolved_model=reply.resolved_model,
            request_id=reply.request_id, latency_s=time.monotonic() - started, value=value)


def parse_answer(text, job: Job, reply: Reply, parse_text: Callable):
    """A provider's answer parsed; an empty or unparseable one carries its reply (it was paid for)."""
    if not isinstance(text, str) or not text.strip():
        raise Unparseable("empty answer", reply=reply)
    try:
        return parse_text(text, job)
    except Unparseable as exc:
        exc.reply = reply
        raise


def _add_usage(total: Outcome, reply: Reply):
    """Billed tokens add up over attempts (a reply that could not be parsed was still paid for)."""
    for name in ("tokens_in", "tokens_out", "tokens_cached", "tokens_reasoning"):
        value = getattr(reply, name)
        if value is not None:
            setattr(total, name, (getattr(total, name) or 0) + value)


def estimate_tokens(*texts: str) -> int:
    """A cautious token count for budgeting: about four characters per token, plus message overhead."""
    return sum(len(text) // 3 + 4 for text in texts) + 8


SETTING_NAMES = ("concurrency", "rpm", "tpm", "max_cost", "retry_failed", "max_attempts", "parse_tries",
                 "backoff_base", "backoff_cap", "timeout")


def settings_from(options: dict) -> CallSettings:
    return CallSettings(**{name: options[name] for name in SETTING_NAMES})


def price_table_for(model: str, prices: str | None, max_cost: float | None) -> PriceTable:
    """The price table (with --prices overrides); --max-cost needs a price for the model, or the budget
    could not be kept."""
    table = load_prices(prices)
    if max_cost is not None and table.lookup(model) is None:
        raise BadInput(f"--max-cost needs a price for model {model!r}: add it to a price file given with --prices")
    return table
