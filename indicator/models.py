"""Tables of indicator 8.3: the province's thresholds and manual attestations.

Verdicts are never stored: they are recomputed from the telemetry and the register each
time, so a change of threshold re-evaluates every period and rewrites nothing. The
thresholds themselves are append-only (one row per change) so a report can say which
figures it applied and who set them.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import JSON, Date, Float, ForeignKey, Index, LargeBinary, String, event
from sqlalchemy.orm import Mapped, mapped_column

from loa.db import Base


class ProvinceIndicatorSettings(Base):
    """One version of the thresholds; the row with the highest id is in force."""

    __tablename__ = "indicator_settings"
    id: Mapped[int] = mapped_column(primary_key=True)
    # A village passes when one of its clusters was available this share of the period...
    availability_threshold: Mapped[float] = mapped_column(Float, default=0.90)
    # ...and played this share of the broadcasts aimed at it.
    aired_threshold: Mapped[float] = mapped_column(Float, default=0.80)
    # The station operates when every week of the period has at least this many airings.
    broadcasts_per_week_min: Mapped[int] = mapped_column(default=1)
    default_period: Mapped[str] = mapped_column(String(40), default="last30")
    # A verdict needs Loa to have observed at least this share of the in-service time;
    # below it the answer is "không đủ dữ liệu", never pass or fail.
    coverage_threshold: Mapped[float] = mapped_column(Float, default=0.90, server_default="0.9")
    changed_ms: Mapped[int] = mapped_column(default=0)
    changed_by: Mapped[str] = mapped_column(String(64), default="")


class ManualAttestation(Base):
    """An inspector's record that a wired or FM station (no telemetry) works and reaches
    the villages; it holds from ``attested_on`` to ``valid_until`` (calendar days, ICT)."""

    __tablename__ = "manual_attestation"
    __table_args__ = (Index("ix_attestation_commune_until", "commune_id", "valid_until"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    commune_id: Mapped[int] = mapped_column(ForeignKey("commune.id"))
    attested_on: Mapped[date] = mapped_column(Date)
    valid_until: Mapped[date] = mapped_column(Date)
    inspector: Mapped[str] = mapped_column(String(200))
    note: Mapped[str] = mapped_column(String(2000), default="")
    station_kind: Mapped[str] = mapped_column(String(8))  # "fm" | "wired"
    created_ms: Mapped[int] = mapped_column(default=0)
    created_by: Mapped[str] = mapped_column(String(64), default="")


class CriteriaSet(Base):
    """A national criteria set as the province applies it: its legal basis, the code and
    wording of the radio indicator in it, the dates it is in force, and (optionally) its
    own thresholds; None falls back to the province's thresholds. Rows override the sets
    Loa ships (``indicator.criteria.BUILT_IN``) key by key."""

    __tablename__ = "indicator_criteria"
    key: Mapped[str] = mapped_column(String(16), primary_key=True)  # "2026-2030"
    name: Mapped[str] = mapped_column(String(300))
    legal_basis: Mapped[str] = mapped_column(String(500))
    indicator_code: Mapped[str] = mapped_column(String(32), default="")
    indicator_text: Mapped[str] = mapped_column(String(500), default="")
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date)
    availability_threshold: Mapped[float | None] = mapped_column(Float)
    aired_threshold: Mapped[float | None] = mapped_column(Float)
    broadcasts_per_week_min: Mapped[int | None]
    changed_ms: Mapped[int] = mapped_column(default=0)
    changed_by: Mapped[str] = mapped_column(String(64), default="")


class ReportSettings(Base):
    """One version of the province's letterhead for filed reports (issuing body, superior,
    number symbol, place, signer, recipients), as JSON; the row with the highest id is in
    force, older rows stay for the record."""

    __tablename__ = "report_settings"
    id: Mapped[int] = mapped_column(primary_key=True)
    doc: Mapped[dict] = mapped_column(JSON)
    changed_ms: Mapped[int] = mapped_column(default=0)
    changed_by: Mapped[str] = mapped_column(String(64), default="")


class AttestationScan(Base):
    """The scanned paper record of an inspection (PDF, JPEG or PNG), kept in the database
    beside the attestation it proves: one backup holds both, the scan commits in the same
    transaction as the attestation and its audit row, and ``loa report --evidence`` copies
    it next to the CSV rows. Checked by content (not by name) when it is received."""

    __tablename__ = "attestation_scan"
    id: Mapped[int] = mapped_column(primary_key=True)
    attestation_id: Mapped[int] = mapped_column(ForeignKey("manual_attestation.id"), index=True)
    filename: Mapped[str] = mapped_column(String(200))
    media_type: Mapped[str] = mapped_column(String(40))
    size_bytes: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_ms: Mapped[int] = mapped_column(default=0)
    created_by: Mapped[str] = mapped_column(String(64), default="")


# --------------------------------------------------------------------------- roll-ups
# Monthly roll-ups of what a verdict measures (docs/indicator.md, section 7). They are a
# cache: every row can be deleted at any time and is recomputed from the raw rows.


class IndicatorDayVersion(Base):
    """A counter per calendar day (ICT; ``(ms + 7 h) // 1 day``) that database triggers
    raise whenever a transition, an airing or an airing target of that day is written,
    changed or deleted, by any process. A month's roll-up remembers the sum of its days'
    counters; a different sum means a late row arrived and the month is computed again."""

    __tablename__ = "indicator_day_version"
    day: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(default=0)


class IndicatorRollupMonth(Base):
    """One closed calendar month rolled up for the whole province, and what it was
    computed from: the day counters' sum, the watch inside it (signature) and the latest
    end of an airing counted (usable only by an evaluation at least ``SETTLE_MS`` later)."""

    __tablename__ = "indicator_rollup_month"
    start_ms: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    end_ms: Mapped[int]
    versions: Mapped[int]
    watch: Mapped[str] = mapped_column(String(32))
    airings_end_ms: Mapped[int]
    computed_ms: Mapped[int]


class IndicatorRollupVillage(Base):
    """A village over a month: its first placement in the month, the observed time at
    least one of its clusters was available, and the signature of its placements."""

    __tablename__ = "indicator_rollup_village"
    month_ms: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    village_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    first_ms: Mapped[int]
    covered_ms: Mapped[int]
    placements: Mapped[str] = mapped_column(String(32))


class IndicatorRollupNode(Base):
    """A cluster in a village over a month: placed, observed and available milliseconds,
    and its availability at the month's start and end (checked against the neighbouring
    month, so a late transition's effect on the following months is caught)."""

    __tablename__ = "indicator_rollup_node"
    month_ms: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    village_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    placed_ms: Mapped[int]
    up_ms: Mapped[int]
    seen_ms: Mapped[int]
    start_available: Mapped[bool]
    end_available: Mapped[bool]


class IndicatorRollupAimed(Base):
    """Airings aimed at and played in a (commune, village) over a month."""

    __tablename__ = "indicator_rollup_aimed"
    month_ms: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    commune_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    village_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    aimed: Mapped[int]
    played: Mapped[int]


class IndicatorRollupHeard(Base):
    """An airing heard in at least one village of a commune during a month (the weekly
    rule and the hours aired need each one: about two a day per commune)."""

    __tablename__ = "indicator_rollup_heard"
    month_ms: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    commune_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    airing_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    slot_ms: Mapped[int]
    duration_ms: Mapped[int]
    language: Mapped[str] = mapped_column(String(16))


# The triggers that raise the day counters. Day of a row: its own time (a transition) or
# its airing's slot (an airing, a target). Kept here and run by migration 0016 as well (one
# source).
#
# SQLite runs them per row: it has one writer at a time, so no two transactions ever wait
# for each other's counter rows.
#
# PostgreSQL runs them once per statement, over the statement's rows (transition tables),
# raising each day touched once, in ascending day order. Why: the counter of a day is one
# row, locked by the upsert until the writer commits. Per-row triggers locked the days in
# the order the rows came, so two writers whose statements touch the same two days in
# opposite orders (a late transition for yesterday in one flush, a batch of today and
# yesterday in another; a scheduler writing airings over several days while targets are
# updated) each held one day and waited for the other: a deadlock, one flush aborted. In
# ascending order a writer waits, it never holds a later day while waiting for an earlier
# one within a statement (tests/indicator/test_rollups.py has two writers do it).
_DAY = "(({ms}) + 25200000) / 86400000"
_BUMP_SQLITE = (
    "INSERT INTO indicator_day_version (day, version) {select} "
    "ON CONFLICT (day) DO UPDATE SET version = version + 1;"
)


def _sqlite_bump(row: str, table: str) -> str:
    if table == "airing_target":
        select_ = (
            f"SELECT {_DAY.format(ms='a.slot_ms')}, 1 FROM airing a WHERE a.id = {row}.airing_id"
        )
    else:
        col = "at_ms" if table == "node_transition" else "slot_ms"
        select_ = f"SELECT {_DAY.format(ms=f'{row}.{col}')}, 1 WHERE true"
    return _BUMP_SQLITE.format(select=select_)


ROLLUP_TABLES = ("node_transition", "airing", "airing_target")
# PostgreSQL: the transition tables each statement-level trigger sees, by event.
_PG_EVENTS = {
    "insert": ("new_rows",),
    "update": ("old_rows", "new_rows"),
    "delete": ("old_rows",),
}


def _pg_days(table: str, rows: str) -> str:
    """The day of each row of the transition table ``rows`` of ``table``."""
    if table == "airing_target":
        return (
            f"SELECT {_DAY.format(ms='a.slot_ms')} FROM {rows} r JOIN airing a "
            "ON a.id = r.airing_id"
        )
    col = "at_ms" if table == "node_transition" else "slot_ms"
    return f"SELECT {_DAY.format(ms=f'r.{col}')} FROM {rows} r"


def rollup_trigger_ddl(dialect: str) -> list[str]:
    """The statements that create the triggers on ``dialect`` (sqlite or postgresql)."""
    out: list[str] = []
    if dialect == "sqlite":
        for table in ROLLUP_TABLES:
            for verb, rows in (
                ("INSERT", ("NEW",)),
                ("UPDATE", ("OLD", "NEW")),
                ("DELETE", ("OLD",)),
            ):
                body = " ".join(_sqlite_bump(r, table) for r in rows)
                out.append(
                    f"CREATE TRIGGER IF NOT EXISTS {table}_day_{verb.lower()} AFTER {verb} "
                    f"ON {table} BEGIN {body} END"
                )
    elif dialect == "postgresql":
        for table in ROLLUP_TABLES:
            for event, tables in _PG_EVENTS.items():
                days = " UNION ALL ".join(_pg_days(table, t) for t in tables)
                out.append(
                    f"CREATE OR REPLACE FUNCTION {table}_day_{event}() RETURNS trigger AS $$ "
                    "BEGIN INSERT INTO indicator_day_version AS v (day, version) "
                    f"SELECT d, COUNT(*) FROM ({days}) x(d) GROUP BY d ORDER BY d "
                    "ON CONFLICT (day) DO UPDATE SET version = v.version + EXCLUDED.version; "
                    "RETURN NULL; END $$ LANGUAGE plpgsql"
                )
                referencing = " ".join(
                    f"{'OLD' if t == 'old_rows' else 'NEW'} TABLE AS {t}" for t in tables
                )
                out.append(
                    f"CREATE TRIGGER {table}_day_{event} AFTER {event.upper()} ON {table} "
                    f"REFERENCING {referencing} FOR EACH STATEMENT "
                    f"EXECUTE FUNCTION {table}_day_{event}()"
                )
    return out


def _pg_drop_triggers() -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {t}_day_{e} ON {t}"
        for t in ROLLUP_TABLES
        for e in (*_PG_EVENTS, "changed")  # "changed": the per-row trigger of before
    ]


def drop_rollup_trigger_ddl(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [
            f"DROP TRIGGER IF EXISTS {t}_day_{v}"
            for t in ROLLUP_TABLES
            for v in ("insert", "update", "delete")
        ]
    return (
        _pg_drop_triggers()
        + [
            f"DROP FUNCTION IF EXISTS {t}_day_{e}()"
            for t in ROLLUP_TABLES
            for e in (*_PG_EVENTS, "changed")
        ]
        + ["DROP FUNCTION IF EXISTS indicator_bump_day(BIGINT)"]
    )


# Any fixed number: the PostgreSQL advisory lock that makes processes starting at once
# (the API and the controllers of a cluster) take turns at creating the triggers.
_PG_TRIGGER_LOCK = 0x10A_0016


def _pg_triggers_present(connection) -> bool:
    wanted = {f"{t}_day_{e}" for t in ROLLUP_TABLES for e in _PG_EVENTS}
    # The tables as the connection's search path names them: not a namesake in another
    # schema of the same database.
    tables = ", ".join(f"'{t}'::regclass" for t in ROLLUP_TABLES)
    found = connection.exec_driver_sql(
        f"SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN ({tables})"
    ).scalars()
    return wanted <= set(found)


def _create_triggers(target, connection, tables=(), **_kw) -> None:
    """After ``create_all`` made every table (the watched ones and the counters), and on
    every later ``create_all`` of the same database, which each process runs at start.

    sqlite: IF NOT EXISTS. postgresql: only when they are missing (a new database, or one
    with the per-row triggers of before), under an advisory lock. Dropping and re-creating
    them at every start, as first written, took exclusive locks on the watched tables while
    the ingest wrote to them, left a moment with no trigger (a transition written then
    would not invalidate its month), and made processes starting together fail on each
    other (CI: a controller of a cluster that never came up)."""
    names = set(connection.dialect.get_table_names(connection))
    if not {"indicator_day_version", *ROLLUP_TABLES} <= names:
        return
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_TRIGGER_LOCK})")
        if _pg_triggers_present(connection):
            return
        for statement in _pg_drop_triggers():
            connection.exec_driver_sql(statement)
    for statement in rollup_trigger_ddl(connection.dialect.name):
        connection.exec_driver_sql(statement)


event.listen(Base.metadata, "after_create", _create_triggers)
