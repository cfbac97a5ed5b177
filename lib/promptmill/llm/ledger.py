"""The ledger of paid API calls (`api_calls`): idempotency keys, lookups, writes and cost.

Every request to a paid service gets a key: the hash of provider, model, the
canonical request body and the item it is for. Before a request is sent the
ledger is asked for a stored successful response under that key; when there is
one it is reused, so a resumed or repeated run never pays twice. When there is
none the key is claimed (`api_claims`) in the same transaction, so a second
process on the same database leaves it alone until the answer is stored, or, when that process
is on another host, until the claim's lease runs out unrenewed. Cost comes from
the price table `schema/prices.toml`, which a user file can override.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from promptmill.core import resources
from promptmill.core.errors import BadInput
from promptmill.core.runs import mark_lease_lapsed, now, pid_alive, redact

DEFAULT_PRICES = resources.SCHEMA_DIR / "prices.toml"
DEFAULT_CLAIM_LEASE = 600.0


def canonical_json(value) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def idempotency_key(provider: str, model: str, request: dict, item: str | None) -> str:
    """sha256 of provider, model, canonical request body and item: equal keys are the same paid call."""
    return hashlib.sha256(canonical_json([provider, model, request, item]).encode("utf-8")).hexdigest()


def claim_lease() -> float:
    """Seconds this run's claims hold for other hosts unless renewed ($PROMPTMILL_CLAIM_LEASE). Renewed every
    quarter lease by the request loop, it must outlast a stall of the process and the hosts' clock difference,
    not a request."""
    text = os.environ.get("PROMPTMILL_CLAIM_LEASE") or str(DEFAULT_CLAIM_LEASE)
    try:
        lease = float(text)
    except ValueError:
        lease = math.nan
    if not (math.isfinite(lease) and lease > 0):
        raise BadInput(f"PROMPTMILL_CLAIM_LEASE must be a number of seconds above 0, not {text!r}")
    return lease


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cached_input: float

    def cost(self, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> float:
        cached = min(tokens_cached or 0, tokens_in or 0)
        return ((tokens_in or 0) - cached) * self.input / 1e6 + cached * self.cached_input / 1e6 \
            + (tokens_out or 0) * self.output / 1e6


@dataclass
class PriceTable:
    """Per-model prices in USD per million tokens; unknown models cost None and warn once."""

    prices: dict[str, Price]
    warned: set = field(default_factory=set)

    def lookup(self, *models: str | None) -> Price | None:
        for model in models:
            if not model:
                continue
            if model in self.prices:
                return self.prices[model]
            prefixes = [name for name in self.prices if model.startswith(name)]
            if prefixes:
                return self.prices[max(prefixes, key=len)]
        return None

    def cost(self, model: str, tokens_in: int | None, tokens_out: int | None, tokens_cached: int | None = 0,
             resolved_model: str | None = None) -> float | None:
        price = self.lookup(model, resolved_model)
        if price is None:
            if model not in self.warned:
                self.warned.add(model)
                print(f"warning: no price for model {model!r} in the price table; its cost is recorded "
                      f"as unknown (add it with --prices FILE)", file=sys.stderr)
            return None
        return price.cost(tokens_in or 0, tokens_out or 0, tokens_cached or 0)


def load_prices(override: str | os.PathLike | None = None) -> PriceTable:
    """The bundled table, with the entries of OVERRIDE (or $PROMPTMILL_PRICES) replacing it model by model."""
    table = _read_prices(DEFAULT_PRICES)
    override = override or os.environ.get("PROMPTMILL_PRICES")
    if override:
        table.update(_read_prices(Path(override)))
    return PriceTable(table)


def _read_prices(path: Path) -> dict[str, Price]:
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    prices = {}
    for model, entry in data.get("models", {}).items():
        prices[model] = Price(float(entry["in"]), float(entry["out"]), float(entry.get("cached_in", entry["in"])))
    return prices


@dataclass
class Usage:
    """What the provider says it billed and who answered, as the ledger records it."""

    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cached: int | None = None
    tokens_reasoning: int | None = None
    resolved_model: str | None = None
    request_id: str | None = None


@dataclass(kw_only=True)
class Outcome(Usage):
    """What happened to one logical request, however many attempts it took."""

    status: str                       # 'ok' or 'failed'
    response: dict | None = None      # JSON as received (last attempt)
    http_status: int | None = None
    attempts: int = 0
    error_class: str | None = None
    error_message: str | None = None
    latency_s: float | None = None
    value: object = None              # the parsed result (not stored: derived from response)
    fatal: bool = False               # the run must stop (e.g. the account has no quota left)


class Ledger:
    """Reads and writes `api_calls` for one run."""

    def __init__(self, store, run, prices: PriceTable):
        self.store = store
        self.run = run
        self.prices = prices
        self.lease = claim_lease()

    def find(self, key: str) -> dict | None:
        """The stored successful call for KEY, else the latest failed one, else None."""
        row = self.store.query(
            "SELECT * FROM api_calls WHERE idempotency_key = ? ORDER BY status = 'ok' DESC, id DESC LIMIT 1",
            (key,))
        return row[0] if row else None

    def claim(self, key: str, retry_failed: bool, scope: str | None = None) -> tuple[str, dict | None]:
        """Decide KEY in one write transaction: ('paid', row) to reuse, ('failed', row) to skip,
        ('busy', None) while another live run has it in flight, else ('claimed', None): send it.
        What is settled already is answered by a read; only a key that may be sent takes the lock."""
        settled = self._settled(key, retry_failed)
        if settled:
            return settled
        with self.store.transaction() as conn:
            settled = self._settled(key, retry_failed)  # another process may have stored it meanwhile
            if settled:
                return settled
            holder = self.store.query(f"{CLAIMS} WHERE c.idempotency_key = ?", (key,))
            if holder and _live(holder[0]):
                return "busy", None
            if holder and _lapsed_elsewhere(holder[0]):
                mark_lease_lapsed(conn, holder[0])
            conn.execute(
                "INSERT INTO api_claims (idempotency_key, scope, run_id, pid, host, claimed_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO UPDATE SET scope = excluded.scope, "
                "run_id = excluded.run_id, pid = excluded.pid, host = excluded.host, claimed_at = excluded.claimed_at",
                (key, scope, self.run.id, os.getpid(), socket.gethostname(), now()))
            return "claimed", None

    def _settled(self, key: str, retry_failed: bool) -> tuple[str, dict] | None:
        found = self.find(key)
        if found and found["status"] == "ok":
            return "paid", found
        if found and not retry_failed:
            return "failed", found
        return None

    def release(self, conn, key: str):
        """Drop this run's claim on KEY (inside the transaction that stores its answer, or on giving up)."""
        conn.execute("DELETE FROM api_claims WHERE idempotency_key = ? AND run_id = ?", (key, self.run.id))

    def release_all(self):
        """Drop every claim this run still holds (requests it never finished)."""
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM api_claims WHERE run_id = ?", (self.run.id,))

    def claimed_elsewhere(self, scope: str) -> int:
        """Requests under SCOPE that other live runs have in flight now."""
        rows = self.store.query(f"{CLAIMS} WHERE c.scope = ? AND c.run_id != ?", (scope, self.run.id))
        return sum(1 for row in rows if _live(row))

    def record(self, conn, key: str, provider: str, model: str, request: dict, outcome: Outcome,
               item_type: str | None = None, item_id: int | None = None) -> tuple[int, float | None]:
        """Insert the call (inside the caller's transaction); return (api_calls id, cost in USD)."""
        cost = None
        if outcome.tokens_in is not None or outcome.tokens_out is not None:
            cost = self.prices.cost(model, outcome.tokens_in, outcome.tokens_out, outcome.tokens_cached,
                                    outcome.resolved_model)
        if isinstance(request.get("model"), str):
            request = {**request, "model": redact(request["model"])}
        cursor = conn.execute(
            "INSERT INTO api_calls (idempotency_key, provider, model, resolved_model, item_type, item_id, "
            "request, response, status, http_status, attempts, error_class, error_message, tokens_in, "
            "tokens_out, tokens_cached, tokens_reasoning, cost_usd, latency_s, request_id, created_at, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, provider, redact(model), outcome.resolved_model, item_type, item_id, canonical_json(request),
             None if outcome.response is None else json.dumps(outcome.response, ensure_ascii=False),
             outcome.status, outcome.http_status, outcome.attempts, outcome.error_class,
             (outcome.error_message or None) and outcome.error_message[:2000], outcome.tokens_in,
             outcome.tokens_out, outcome.tokens_cached, outcome.tokens_reasoning, cost,
             None if outcome.latency_s is None else round(outcome.latency_s, 4), outcome.request_id, now(),
             self.run.id),
        )
        return cursor.lastrowid, cost


CLAIMS = "SELECT c.*, r.status, r.lease_until FROM api_claims c JOIN runs r ON r.id = c.run_id"


def _live(claim: dict) -> bool:
    """A claim holds while its run is still running and its process is alive: seen by pid on this host,
    by an unexpired lease from another (whose processes can't be seen)."""
    if claim["status"] != "running":
        return False
    if claim["host"] == socket.gethostname():
        return pid_alive(claim["pid"])
    return (claim["lease_until"] or "") > now()


def _lapsed_elsewhere(claim: dict) -> bool:
    """Not live, yet its run still says running on another host: the lease ran out."""
    return claim["status"] == "running" and claim["host"] != socket.gethostname()
