"""The durable outbox: every alert is in SQLite before any output sees it.

One `delivery` row per (output, alert id), ordered by `seq`. A row is `pending` (with its
`next_attempt_at`), then `delivered`, `dead` (a permanent failure, kept with its error: the
dead-letter table, also visible as the `dead_letter` view) or `dropped` (lost to the bounds or
purged). Delivered and dropped rows keep only their ids -- tombstones that make an alert id
delivered at most once per output, restarts included -- until `dedup_seconds` have passed.

`store` (`enqueue`) writes the alerts and the caller's opaque state (the source checkpoint,
throttle windows) in one transaction, so the checkpoint only moves past an event once its alerts
are committed. WAL mode. `synchronous` (outbox settings) says when the engine's commits reach
the disk: `batched` (the default) commits with synchronous=NORMAL and makes them durable at most
`sync_interval_seconds` later -- the next commit after that is made with synchronous=FULL,
which fsyncs the WAL up to it, or `sync` writes a small one when no commit comes (the run loop
calls it); `full` fsyncs every commit; `normal` leaves it to SQLite's checkpoints. A crash of the
process loses no commit in any mode (the WAL is in the OS's cache). A power loss may roll back
the commits not yet fsynced, alerts together with their checkpoint, so those events are read
again; what must wait for the disk waits for `synced` (Kafka offsets, deleting spool segments).
Measured cost: see bench/alertcost.py and docs/performance.md.

Each thread gets its own connection (engine thread: the writer; one per dispatcher worker);
writers in this process queue on a lock, other processes (the `outbox` CLI) on SQLite's busy
timeout. Dispatcher threads commit their marks with synchronous=NORMAL (`relax_sync`): losing
a mark to power failure costs a repeated attempt, not an alert.

Bounds: at most `max_rows` pending + dead rows (the oldest are dropped when an enqueue exceeds
it), and none older than `max_age_seconds` (`maintain`). Every drop is counted (also in the
`outbox.dropped` state key) and reported through `on_event` as a DROPPED event.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from detector.alert.events import DeliveryEvent, EventKind, OnEvent, log_event
from detector.alert.model import Alert
from detector.alert.route import Router
from detector.alert.settings import OutboxSettings
from detector.errors import ConfigError, StateError

DB_NAME = "detector.db"
SCHEMA_VERSION = 1
PAGE_CACHE_KIB = 256
BUSY_TIMEOUT_MS = 30_000  # how long a write waits for another connection's transaction
PENDING, DELIVERED, DEAD, DROPPED = "pending", "delivered", "dead", "dropped"
STATUSES = (PENDING, DELIVERED, DEAD, DROPPED)
HELD = (PENDING, DEAD)  # rows that carry an alert body and count against max_rows
DROPPED_KEY = "outbox.dropped"
SYNCED_KEY = "outbox.synced"  # written by each commit made to be fsynced (see Outbox._write)
DEFAULT_SETTINGS = OutboxSettings()
_SCHEMA = """
CREATE TABLE IF NOT EXISTS delivery (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    output TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead', 'dropped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    body BLOB,
    UNIQUE (output, alert_id)
);
CREATE INDEX IF NOT EXISTS delivery_pending ON delivery (output, seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS delivery_held ON delivery (seq) WHERE status IN ('pending', 'dead');
CREATE INDEX IF NOT EXISTS delivery_spent ON delivery (updated_at) WHERE status IN ('delivered', 'dropped');
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE VIEW IF NOT EXISTS dead_letter AS
    SELECT seq, output, alert_id, rule, attempts, updated_at, last_error FROM delivery WHERE status = 'dead';
"""
_HELD_SQL = "status IN ('pending', 'dead')"
_MARK_DELIVERED_SQL = ("UPDATE delivery SET status = 'delivered', body = NULL, updated_at = ?, "
                       "attempts = attempts + 1, last_error = NULL WHERE seq = ?")
_MARK_DELIVERED_MANY_SQL = ("UPDATE delivery SET status = 'delivered', body = NULL, updated_at = ?, "
                            "attempts = attempts + 1, last_error = NULL WHERE seq IN ({})")
MARK_CHUNK = 500  # rows per UPDATE: well under SQLite's bound on parameters (999 before 3.32)
_ROW_COLUMNS = ("seq, output, alert_id, rule, priority, status, attempts, created_at, updated_at, "
                "next_attempt_at, last_error")


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A pending row as a dispatcher worker sees it."""

    seq: int
    output: str
    alert: Alert
    attempts: int
    created_at: float
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class PendingRead:
    """One read of an output's pending rows. Every row with seq <= `horizon` that is not in
    `rows` was, when they were read, no longer pending (sent, purged, dropped), held back by
    the query's `skip`, or -- unless `complete` -- past its limit."""

    rows: list[PendingRow]
    horizon: int  # the highest seq stored so far (sqlite_sequence: deleted rows count too)
    complete: bool  # fewer rows than the limit were read: none pending is left out


@dataclass(frozen=True, slots=True)
class Stored:
    """What one `Outbox.store` added: the number of rows, and the rows themselves when known."""

    added: int
    rows: list[PendingRow] | None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A row as `detector outbox list` shows it (no body)."""

    seq: int
    output: str
    alert_id: str
    rule: str
    priority: str
    status: str
    attempts: int
    created_at: float
    updated_at: float
    next_attempt_at: float
    last_error: str | None


class Outbox:
    """The SQLite outbox at `path` (usually `<state_dir>/detector.db`)."""

    def __init__(self, path: str | os.PathLike[str], settings: OutboxSettings = DEFAULT_SETTINGS,
                 router: Router | None = None, on_event: OnEvent = log_event,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.settings = settings
        self.router = router
        self.on_event = on_event
        self.clock = clock
        self._local = threading.local()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._held_estimate: int | None = None
        self._identity: tuple[int, int] | None = None
        self._unsynced_since: float | None = None  # time.monotonic() of the oldest engine commit not fsynced
        # Written under SYNCED_KEY by each commit made to be fsynced: a value never written before
        # (a byte-identical one would leave the page, and the WAL, untouched: nothing to sync).
        self._syncs = time.time_ns()
        self._create()

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike[str], settings: OutboxSettings = DEFAULT_SETTINGS,
                     router: Router | None = None, on_event: OnEvent = log_event) -> Outbox:
        """The outbox of a state directory (created 0700 if missing)."""
        directory = Path(state_dir)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"state directory {directory}: {exc.strerror or exc}") from None
        return cls(directory / DB_NAME, settings, router, on_event)

    # -- connections -----------------------------------------------------------------------
    def _create(self) -> None:
        try:
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            db = self._db()
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(f"{self.path}: outbox schema {version} is newer than this detector's")
            # A damaged file often opens fine and fails at the first query that reaches a bad
            # page: check it whole now (about a second per 100 MB), so that it is one clear
            # error at start, not a traceback later.
            problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise StateError(_corrupt(self.path, problem))
            db.execute("PRAGMA journal_mode=WAL")
            with self._write() as tx:
                tx.executescript_in_tx(_SCHEMA)
                tx.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            st = os.stat(self.path)
            self._identity = (st.st_dev, st.st_ino)
        except sqlite3.DatabaseError as exc:
            self.close()
            if is_damaged(exc):
                raise StateError(_corrupt(self.path, str(exc))) from None
            raise ConfigError(f"{self.path}: cannot open the outbox: {exc}") from None
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise ConfigError(f"{self.path}: cannot open the outbox: {exc}") from None
        except (ConfigError, StateError):
            self.close()
            raise

    def replaced(self) -> bool:
        """True once the database file is no longer at its path (deleted, or another file put
        there): SQLite goes on writing to the open, unlinked file, and the next start would
        find no checkpoint."""
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._identity

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                 check_same_thread=False)
            db.execute(f"PRAGMA synchronous={'FULL' if self.settings.synchronous == 'full' else 'NORMAL'}")
            # 256 KiB of page cache per connection, not SQLite's 2 MiB: the outbox keeps growing
            # (delivered ids are kept a day), so each cache slowly fills to its cap, and there
            # are three connections (engine, worker, housekeeper): with the default, memory kept
            # creeping up for many minutes. The OS caches the file anyway.
            db.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    @contextmanager
    def _write(self, *, wait: bool = True, sync: bool = False) -> Iterator[_Tx]:
        """One write transaction. Writers of this process queue on a lock first: SQLite's own
        busy handler sleeps in steps of up to 100 ms, a lock hands over at once. Without `wait`
        it raises `OutboxBusy` at once while another writer (of any process) holds the database.
        With `sync` it commits with synchronous=FULL: this commit and every one before it are
        on disk when it returns."""
        db = self._db()
        if not self._write_lock.acquire(blocking=wait):
            raise OutboxBusy
        try:
            if not wait:
                db.execute("PRAGMA busy_timeout=0")
            if sync:
                db.execute("PRAGMA synchronous=FULL")
            try:
                _begin(db, wait)
                try:
                    yield _Tx(db)
                    if sync:
                        # A commit that changes no page writes no WAL frame, and so syncs nothing:
                        # this one always changes one.
                        self._syncs += 1
                        db.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                                   "SET value = excluded.value", (SYNCED_KEY, str(self._syncs).encode()))
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            finally:
                if not wait:
                    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                if sync:
                    db.execute("PRAGMA synchronous=NORMAL")
        finally:
            self._write_lock.release()

    # -- durability (the engine's commits) ----------------------------------------------------
    @property
    def synced(self) -> bool:
        """True when every commit of the engine's (`store`, `put_state`) is on disk."""
        return self._unsynced_since is None

    def sync_due(self, now: float | None = None) -> float | None:
        """Seconds until the engine's unsynced commits are due to be made durable (<= 0: now);
        None when there are none."""
        if self._unsynced_since is None:
            return None
        return self._unsynced_since + self.settings.sync_interval_seconds - (time.monotonic() if now is None else now)

    def sync(self) -> None:
        """Make every commit so far durable: one small commit with synchronous=FULL, which
        fsyncs the WAL up to and including it (SQLite's WAL: earlier commits are before it)."""
        if self._unsynced_since is None:
            return
        with self._write(sync=True):
            pass  # _write's own write is the one this commit needs
        self._unsynced_since = None

    @contextmanager
    def _engine_write(self) -> Iterator[_Tx]:
        """One of the engine's write transactions, fsynced when due ("batched": once its oldest
        unsynced commit is `sync_interval_seconds` old; "full": the connection always is;
        "normal": never), and what is left unsynced noted."""
        due = self.sync_due()
        sync = self.settings.synchronous == "batched" and due is not None and due <= 0
        with self._write(sync=sync) as tx:
            yield tx
        if self.settings.synchronous != "batched" or sync:
            self._unsynced_since = None
        elif self._unsynced_since is None:
            self._unsynced_since = time.monotonic()

    def relax_sync(self) -> None:
        """Commit this thread's marks without fsync (synchronous=NORMAL).

        For dispatcher threads: a delivered/retry/dead mark lost to power failure only means
        one more attempt (at-least-once), never a lost alert, and the next fsynced commit (an
        enqueue) makes every earlier commit durable too, since the WAL is one file.
        """
        self._db().execute("PRAGMA synchronous=NORMAL")

    def release(self) -> None:
        """Close the calling thread's connection (a worker thread calls this on exit)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            self._local.db = None
            with self._lock:
                self._connections.remove(db)
            db.close()

    def close(self) -> None:
        """Close every connection (call once all threads using the outbox have stopped)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()
        self._local = threading.local()

    # -- the engine side ---------------------------------------------------------------------
    def enqueue(self, alerts: Sequence[Alert], state: Mapping[str, bytes | None] | None = None) -> int:
        """Store each alert for every output its route selects, and `state`, atomically.

        A (output, alert id) already present -- pending, delivered, dead or dropped -- is
        ignored. A state value of None deletes the key. Returns the number of rows added.
        """
        return self.store(alerts, state).added

    def store(self, alerts: Sequence[Alert], state: Mapping[str, bytes | None] | None = None,
              *, list_rows: bool = True) -> Stored:
        """`enqueue`, and (with `list_rows`) the rows it added as a worker would read them,
        when they are known (every row was added and none was dropped to the outbox's bound),
        so that an in-process dispatcher can send them without reading them back."""
        now = self.clock()
        rows = [(output, alert.id, alert.rule, alert.priority, now, now, now, encode_alert(alert))
                for alert in alerts for output in self._outputs_for(alert)]
        if not rows and not state:
            return Stored(0, [])  # nothing to make durable: no transaction, no fsync
        drops: Counter[str] = Counter()
        with self._engine_write() as tx:
            before = tx.db.total_changes
            tx.db.executemany(
                "INSERT OR IGNORE INTO delivery (output, alert_id, rule, priority, status, created_at, "
                "updated_at, next_attempt_at, body) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)", rows)
            added = tx.db.total_changes - before
            # One writer holds the lock: the rows of one executemany take consecutive seqs (AUTOINCREMENT)
            last = tx.db.execute("SELECT last_insert_rowid()").fetchone()[0] if added == len(rows) else 0
            self._put_state(tx, state or {})
            if added:
                drops = self._bound_size(tx, added, now)
        self._report_drops(drops, "outbox full")
        if added != len(rows) or drops or not list_rows:
            return Stored(added, None)
        # Decoded from the stored body, as the worker's query would: a sink sees the same values
        # (lists, not the template's tuples) whichever way a row reaches it.
        first = last - added + 1
        return Stored(added, [PendingRow(first + i, row[0], decode_alert(row[7]), 0, now, now)
                              for i, row in enumerate(rows)])

    def _outputs_for(self, alert: Alert) -> list[str]:
        if self.router is None:
            raise ConfigError("this outbox was opened without routes; it cannot take alerts")
        return self.router.outputs_for(alert)

    @staticmethod
    def _put_state(tx: _Tx, state: Mapping[str, bytes | None]) -> None:
        for key, value in state.items():
            if value is None:
                tx.execute("DELETE FROM state WHERE key = ?", (key,))
            else:
                tx.execute("INSERT INTO state (key, value) VALUES (?, ?) "
                           "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def put_state(self, state: Mapping[str, bytes | None]) -> None:
        """Write (or, for None, delete) state keys in one transaction (an engine commit: see `synced`)."""
        with self._engine_write() as tx:
            self._put_state(tx, state)

    def get_state(self, key: str) -> bytes | None:
        row = self._db().execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def state_items(self, prefix: str) -> dict[str, bytes]:
        """Every state key starting with `prefix`, with its value."""
        rows = self._db().execute("SELECT key, value FROM state WHERE substr(key, 1, ?) = ?",
                                  (len(prefix), prefix)).fetchall()
        return {key: bytes(value) for key, value in rows}

    # -- bounds ------------------------------------------------------------------------------
    def _bound_size(self, tx: _Tx, added: int, now: float) -> Counter[str]:
        """Drop the oldest held rows beyond max_rows. The exact count runs only when an
        upper-bound estimate (kept by this writer) says the bound may be exceeded."""
        limit = self.settings.max_rows
        estimate = (self._held_estimate or 0) + added
        if self._held_estimate is not None and estimate <= limit:
            self._held_estimate = estimate
            return Counter()
        held = tx.db.execute(f"SELECT COUNT(*) FROM delivery WHERE {_HELD_SQL}").fetchone()[0]
        self._held_estimate = min(held, limit)
        if held <= limit:
            return Counter()
        cutoff = tx.db.execute(f"SELECT seq FROM delivery WHERE {_HELD_SQL} ORDER BY seq LIMIT 1 OFFSET ?",
                               (held - limit - 1,)).fetchone()[0]
        return self._drop(tx, f"{_HELD_SQL} AND seq <= ?", (cutoff,), now, "outbox full")

    def _drop(self, tx: _Tx, where: str, args: Sequence[Any], now: float, reason: str,
              *, count: bool = True) -> Counter[str]:
        counts = Counter({output: n for output, n in tx.db.execute(
            f"SELECT output, COUNT(*) FROM delivery WHERE {where} GROUP BY output", args)})
        if counts:
            tx.execute(f"UPDATE delivery SET status = 'dropped', body = NULL, updated_at = ?, last_error = ? "
                       f"WHERE {where}", (now, reason, *args))
            if count:
                total = self._get_int(tx.db, DROPPED_KEY) + sum(counts.values())
                self._put_state(tx, {DROPPED_KEY: str(total).encode()})
        return counts

    def _report_drops(self, drops: Counter[str], reason: str) -> None:
        for output, count in sorted(drops.items()):
            self.on_event(DeliveryEvent(EventKind.DROPPED, output, count=count, reason=reason))

    @staticmethod
    def _get_int(db: sqlite3.Connection, key: str) -> int:
        row = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return int(bytes(row[0])) if row else 0

    @property
    def dropped_total(self) -> int:
        """Alerts dropped by the bounds over the outbox's whole life (purges not included)."""
        return self._get_int(self._db(), DROPPED_KEY)

    def maintain(self) -> None:
        """Drop held rows older than max_age; forget tombstones older than dedup_seconds."""
        now = self.clock()
        cutoff = now - self.settings.max_age_seconds
        db = self._db()
        old = db.execute(f"SELECT 1 FROM delivery WHERE {_HELD_SQL} AND created_at < ? LIMIT 1", (cutoff,))
        drops: Counter[str] = Counter()
        if old.fetchone() is not None:
            with self._write() as tx:
                drops = self._drop(tx, f"{_HELD_SQL} AND created_at < ?", (cutoff,), now, "too old")
        self._report_drops(drops, "too old")
        spent = now - self.settings.dedup_seconds
        while True:
            with self._write() as tx:
                before = tx.db.total_changes
                tx.execute("DELETE FROM delivery WHERE seq IN (SELECT seq FROM delivery WHERE status IN "
                           "('delivered', 'dropped') AND updated_at < ? LIMIT 10000)", (spent,))
                if tx.db.total_changes - before < 10000:
                    break

    # -- the dispatcher side -----------------------------------------------------------------
    def pending(self, output: str, limit: int = 100, skip: tuple[int, int] | None = None) -> list[PendingRow]:
        """The oldest pending rows of `output`, in order (due or not). `skip` = (first, last):
        leave out the rows with first <= seq <= last (a worker's rows sent and not yet marked),
        in the query, so that they are neither read nor decoded again."""
        return self.pending_read(output, limit, skip).rows

    def pending_read(self, output: str, limit: int = 100, skip: tuple[int, int] | None = None) -> PendingRead:
        """`pending`, with what a worker needs to trust rows handed over since (see PendingRead):
        the highest seq stored when the rows were read, in the same read transaction, and
        whether the query saw every pending row (fewer than `limit` read, undecodable ones too)."""
        sql = ("SELECT seq, output, attempts, created_at, next_attempt_at, body FROM delivery "
               "WHERE output = ? AND status = 'pending'")
        args: tuple[Any, ...] = (output,)
        if skip is not None:
            sql += " AND seq NOT BETWEEN ? AND ?"
            args += skip
        db = self._db()
        db.execute("BEGIN")  # one snapshot for both reads
        try:
            found = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'delivery'").fetchone()
            rows = db.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit)).fetchall()
        finally:
            db.execute("COMMIT")
        deliveries = []
        for seq, out, attempts, created, next_at, body in rows:
            try:
                alert = decode_alert(body)
            except (msgspec.DecodeError, TypeError) as exc:
                self.dead_letter(seq, f"stored alert cannot be decoded ({type(exc).__name__})")
                continue
            deliveries.append(PendingRow(seq, out, alert, attempts, created, next_at))
        return PendingRead(deliveries, int(found[0]) if found else 0, len(rows) < limit)

    def mark_delivered(self, seq: int) -> None:
        """The row's alert reached its output: keep only the tombstone."""
        with self._write() as tx:
            tx.execute(_MARK_DELIVERED_SQL, (self.clock(), seq))

    def mark_delivered_many(self, seqs: Sequence[int], *, wait: bool = True) -> bool:
        """`mark_delivered` for several rows in one transaction; True once written. Without
        `wait`, False (nothing written) while another connection holds the write lock: a worker
        then sends on and marks later, instead of sleeping in SQLite's busy handler (1, 2, 5...
        ms) behind the engine's commit. One UPDATE per MARK_CHUNK rows (`seq IN (...)`): about
        half the CPU per row of one statement per row."""
        now = self.clock()
        try:
            with self._write(wait=wait) as tx:
                for start in range(0, len(seqs), MARK_CHUNK):
                    chunk = seqs[start:start + MARK_CHUNK]
                    tx.execute(_MARK_DELIVERED_MANY_SQL.format(", ".join("?" * len(chunk))), (now, *chunk))
        except OutboxBusy:
            return False
        return True

    def schedule_retry(self, seq: int, next_attempt_at: float, error: str) -> None:
        with self._write() as tx:
            tx.execute("UPDATE delivery SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, "
                       "updated_at = ? WHERE seq = ? AND status = 'pending'",
                       (next_attempt_at, error, self.clock(), seq))

    def dead_letter(self, seq: int, error: str) -> None:
        with self._write() as tx:
            tx.execute("UPDATE delivery SET status = 'dead', attempts = attempts + 1, last_error = ?, "
                       "updated_at = ? WHERE seq = ? AND status = 'pending'", (error, self.clock(), seq))

    # -- the CLI side ------------------------------------------------------------------------
    def rows(self, output: str | None = None, status: str | None = None, limit: int | None = 100) -> list[OutboxRow]:
        """Rows, oldest first, filtered by output and status."""
        where, args = _filters(output, status, None)
        sql = f"SELECT {_ROW_COLUMNS} FROM delivery WHERE {where} ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [OutboxRow(*row) for row in self._db().execute(sql, args)]

    def counts(self) -> dict[tuple[str, str], int]:
        """(output, status) -> rows."""
        return {(o, s): n for o, s, n in self._db().execute(
            "SELECT output, status, COUNT(*) FROM delivery GROUP BY output, status ORDER BY output, status")}

    def held_counts(self) -> tuple[int, int]:
        """(pending, dead) rows of all outputs, read through the partial index on held rows: never
        a scan of the delivered/dropped tombstones, which are kept `dedup_seconds` and outnumber them."""
        rows = dict(self._db().execute(
            f"SELECT status, COUNT(*) FROM delivery WHERE {_HELD_SQL} GROUP BY status").fetchall())
        return int(rows.get(PENDING, 0)), int(rows.get(DEAD, 0))

    def oldest_pending_age(self) -> float:
        """Seconds since the oldest pending row was enqueued (0 when nothing is pending)."""
        row = self._db().execute("SELECT MIN(created_at) FROM delivery WHERE status = ?", (PENDING,)).fetchone()
        return 0.0 if row is None or row[0] is None else max(0.0, self.clock() - float(row[0]))

    def retry(self, output: str | None = None, status: str = DEAD, seqs: Sequence[int] | None = None) -> int:
        """Make dead (or pending) rows due now with a fresh attempt count; returns rows changed."""
        if status not in HELD:
            raise ConfigError(f"only {' or '.join(HELD)} rows can be retried, not {status}")
        where, args = _filters(output, status, seqs)
        with self._write() as tx:
            cursor = tx.execute(f"UPDATE delivery SET status = 'pending', attempts = 0, next_attempt_at = ?, "
                                f"updated_at = ? WHERE {where}", (self.clock(), self.clock(), *args))
            changed: int = cursor.rowcount
        self._held_estimate = None
        return changed

    def purge(self, output: str | None = None, status: str | None = None, seqs: Sequence[int] | None = None) -> int:
        """Give up on held rows (pending and dead, or one of them): they become dropped
        tombstones, so a re-evaluated alert is not delivered after all. Returns rows purged."""
        if status is not None and status not in HELD:
            raise ConfigError(f"only {' or '.join(HELD)} rows can be purged, not {status}")
        where, args = _filters(output, status, seqs)
        if status is None:
            where += f" AND {_HELD_SQL}"
        with self._write() as tx:
            counts = self._drop(tx, where, args, self.clock(), "purged", count=False)
        self._held_estimate = None
        return sum(counts.values())


def is_damaged(error: BaseException) -> bool:
    """A damaged database (SQLITE_CORRUPT, SQLITE_NOTADB: plain DatabaseError) does not heal by
    waiting, unlike a full disk, a read-only mount or a busy lock (OperationalError)."""
    return type(error) is sqlite3.DatabaseError


def _corrupt(path: Path, problem: str) -> str:
    problem = " ".join(problem.split())  # quick_check's report spans lines: one line
    return (f"{path}: the state database is damaged ({problem}); move it aside and start again: "
            f"its checkpoint and undelivered alerts are lost, and the log is read again per start_at")


class OutboxBusy(Exception):
    """Another writer holds the outbox and the caller chose not to wait (`_write(wait=False)`)."""


def _begin(db: sqlite3.Connection, wait: bool) -> None:
    """BEGIN IMMEDIATE; without `wait`, a held database is `OutboxBusy`, not an error."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if not wait and exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise OutboxBusy from None
        raise


class _Tx:
    """The open write transaction of one connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, args)

    def executescript_in_tx(self, script: str) -> None:
        for statement in script.split(";"):
            if statement.strip():
                self.db.execute(statement)


def _filters(output: str | None, status: str | None, seqs: Sequence[int] | None) -> tuple[str, list[Any]]:
    clauses: list[str] = ["1 = 1"]
    args: list[Any] = []
    if output is not None:
        clauses.append("output = ?")
        args.append(output)
    if status is not None:
        if status not in STATUSES:
            raise ConfigError(f"unknown status {status!r} (use one of: {', '.join(STATUSES)})")
        clauses.append("status = ?")
        args.append(status)
    if seqs is not None:
        clauses.append(f"seq IN ({', '.join('?' * len(seqs))})" if seqs else "0 = 1")
        args.extend(seqs)
    return " AND ".join(clauses), args


def encode_alert(alert: Alert) -> bytes:
    """Every field of the alert (not only the Falco shape), for a lossless round trip: a JSON
    object of the fields by name (msgspec: ~2x faster than a dict through orjson, the same
    bytes, and integers past 64 bits too)."""
    return _ENCODER.encode(alert)


def decode_alert(body: bytes) -> Alert:
    """The alert of a stored body (msgspec.DecodeError when it is not one)."""
    return _DECODER.decode(body)


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Alert)
