"""Indicator 8.3 verdicts, per village and per commune, with the evidence behind them.

The rule (docs/indicator.md, section 0), for a commune and a period:

* **The station operates**: the commune has at least one cluster and every week of the
  period (``periods.weeks``) has at least ``broadcasts_per_week_min`` airings played by at
  least one of its clusters.
* **Every village is reached**: each village the commune had in the period has clusters
  that were available for at least ``availability`` of the time and played at least
  ``aired`` of the broadcasts aimed at it.

Decisions taken here (each one is what a report reader would expect):

* *The register as it was.* Villages are those with a membership in the commune during the
  period, clusters those placed in the village during it, names those of the period's last
  day. A village belonging to the commune for part of the period is judged on that part.
* *Availability of a village* is the share of its window during which at least one of its
  clusters was available, each cluster counting only while it was placed there (see
  ``availability``). With one cluster this is that cluster's availability; with a cluster
  replaced mid-quarter the village stays reached, which is what the people there heard.
* *Aimed / played.* A broadcast is aimed at a village when an ``AiringTarget`` exists for
  one of its clusters for an airing whose slot lies in the window. The target's village and
  commune are those the dispatcher recorded on it (the node's at dispatch time); a target
  recorded without them is attributed through the register at the slot time. The village
  played it when one of those targets reached phase ``finished``, or
  ``preempted`` after it had started (``started_at_ms`` set: an emergency cut it short, the
  village heard it). Cancelled airings are excluded, and so are airings not yet over
  (slot + duration + ``SETTLE_MS`` after the evaluation time) unless already played.
  A village at which nothing was aimed during the period fails: it was not reached.
* *Manual attestation.* A wired/FM commune (or one with no cluster in the period) passes
  when an attestation covers the period's last day (attested on or before it, valid until
  it or later); the result is marked ``manual``. IP communes are judged on telemetry only.
* *Ongoing periods* are judged so far (up to the evaluation time).
"""

from __future__ import annotations

import copy
import os
import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from fractions import Fraction
from functools import lru_cache
from operator import itemgetter

from sqlalchemy import Engine, or_, select, text
from sqlalchemy.orm import Session

from indicator import intervals as iv
from indicator.availability import available_intervals, states_at
from indicator.coverage import continuity, watched
from indicator.criteria import Criteria, sets_for
from indicator.errors import NotFoundError
from indicator.manual_inputs import MANUAL_KINDS, Thresholds, current_thresholds
from indicator.measure import measure
from indicator.models import ManualAttestation
from indicator.periods import Period, _midnight_ms, weeks
from indicator.rollups import MonthRollup, months_within
from indicator.rollups import load as load_rollups
from indicator.sqlstream import ordered_join, stream_rows
from indicator.vn import (
    LANGUAGE_ORDER,
    STATE_ORDER,
    hours,
    language_key,
    percent,
    village_title,
)
from loa.timeutil import format_date, format_datetime, ms_to_dt, now_ms
from registry import history
from registry.models import (
    Commune,
    District,
    NodePlacement,
    Province,
    Village,
    VillageMembership,
)

SETTLE_MS = 15 * 60_000
# Two-level local government from 01/07/2025 (no districts).
DISTRICTS_ABOLISHED_MS = _midnight_ms(date(2025, 7, 1))
PLAYED_PHASES = ("finished",)
PLAYED_IF_STARTED = ("preempted",)


@dataclass
class Reason:
    """Why a verdict is what it is: a code for machines and a sentence for people."""

    code: str
    text: str
    level: str = "fail"  # "fail" | "info"
    village_id: int | None = None
    value: float | None = None
    threshold: float | None = None
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "code": self.code,
            "text": self.text,
            "level": self.level,
            "village_id": self.village_id,
            "value": self.value,
            "threshold": self.threshold,
            "detail": copy.deepcopy(self.detail),
        }


@dataclass
class ClusterEvidence:
    node_id: str
    placed_ms: int  # time placed in the village within the village's window
    available_ms: int  # observed available time while placed there
    availability: float  # available_ms / observed_ms (0 when nothing was observed)
    observed_ms: int = 0  # observed time while placed there (watch + proven continuity)
    bridged_ms: int = 0  # of which proven by the node's own continuity across a gap


VERDICTS = ("pass", "fail", "insufficient_data", "not_in_service")
VERDICT_TEXT = {
    "pass": "Đạt",
    "fail": "Không đạt",
    "insufficient_data": "Không đủ dữ liệu",
    "not_in_service": "Chưa đưa vào sử dụng",
}


@dataclass
class VillageVerdict:
    id: int
    code: str
    name: str
    window_ms: int
    passed: bool | None  # None for manual communes: nothing measured
    availability: float | None
    aired_ratio: float | None
    aimed: int
    played: int
    clusters: list[ClusterEvidence]
    reasons: list[Reason]
    verdict: str = "fail"  # one of VERDICTS ("" for villages of a manual commune)
    coverage: float | None = None  # observed share of the in-service time
    in_service_ms: int = 0
    observed_ms: int = 0
    in_service_from_ms: int | None = None
    continuity: list[dict] = field(default_factory=list)  # gaps bridged by a node

    @property
    def title(self) -> str:
        return village_title(self.name)


@dataclass
class CommuneVerdict:
    id: int
    code: str
    name: str
    district_id: int | None
    district_name: str | None
    station_kind: str  # registered kind: ip | fm | wired
    station: str  # what it had in the period: ip | fm | wired | none
    start_ms: int
    end_ms: int
    passed: bool
    manual: bool
    reasons: list[Reason]
    villages: list[VillageVerdict]
    clusters: int
    weeks: list[tuple[int, int, int]]  # (start, end, airings played)
    airings: int
    aired_ms: int
    aired_ms_by_language: dict[str, int]
    clusters_by_state: dict[str, int]
    attestation: dict | None = None
    skipped_weeks: int = 0  # weeks observed below the coverage threshold, not judged
    heard: list[tuple[int, int, int, str]] = field(default_factory=list, repr=False)
    verdict: str = "fail"  # one of VERDICTS
    coverage: float | None = None  # observed share of the in-service time (None: manual)
    in_service_ms: int = 0
    observed_ms: int = 0
    in_service_from_ms: int | None = None
    first_cluster_after_ms: int | None = None  # no cluster yet: when the first one came
    predecessors: list[dict] = field(default_factory=list)  # communes merged into this one

    @property
    def failed_villages(self) -> list[VillageVerdict]:
        return [v for v in self.villages if v.passed is False]


@dataclass
class Summary:
    total: int
    passed: int
    failed: int
    manual: int
    text: str
    stations: dict[str, int]
    failing: list[dict]
    insufficient_data: int = 0
    not_in_service: int = 0
    observed: float | None = None  # share of the period the controller watched

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class DistrictRollup:
    id: int
    name: str
    total: int
    passed: int
    text: str


@dataclass
class Evaluation:
    period: Period
    start_ms: int
    end_ms: int
    evaluated_ms: int
    thresholds: Thresholds
    province_name: str
    scope: str
    communes: list[CommuneVerdict]
    summary: Summary
    districts: list[DistrictRollup]
    airings: int
    aired_ms: int
    aired_ms_by_language: dict[str, int]
    clusters_by_state: dict[str, int]
    unobserved: list[tuple[int, int]] = field(default_factory=list)  # watch gaps
    criteria: Criteria | None = None  # the set that judged this period (or part)
    parts: list[Evaluation] = field(default_factory=list)  # split at a change of set
    whole: Period | None = None  # the period asked for, when split into parts
    facts: _Facts | None = field(default=None, repr=False)  # what it was judged on


# --------------------------------------------------------------------------- helpers


def _at_least(value_num: int, value_den: int, threshold: float) -> bool:
    """``num/den >= threshold`` in exact arithmetic: 90.0% must pass a 0.9 threshold even
    though 0.9 has no exact binary form."""
    num, den = _exact(threshold)
    return value_num * den >= num * value_den


@lru_cache(maxsize=64)
def _exact(threshold: float) -> tuple[int, int]:
    """The threshold as the decimal it was written as (a few distinct values per
    evaluation, compared tens of thousands of times: parsed once)."""
    t = Fraction(str(threshold))
    return t.numerator, t.denominator


def _commune_window(c: Commune, start_ms: int, end_ms: int) -> tuple[int, int]:
    lo = max(start_ms, c.created_ms or 0)
    hi = end_ms if c.retired_ms is None else min(end_ms, c.retired_ms)
    return lo, hi


def _select_communes(
    session: Session, scope: str | None, start_ms: int, end_ms: int
) -> tuple[list[Commune], str]:
    """Communes alive in the window, narrowed by ``scope``: ``province[:CODE]``,
    ``district:CODE`` or ``commune:CODE`` (codes or numeric ids)."""
    communes = history.communes_existing(session, start_ms, end_ms)
    scope = (scope or "").strip() or "province"
    kind, _, ref = scope.partition(":")
    kind = kind.lower()
    if kind == "province" and not ref:
        return communes, scope
    if kind not in ("province", "district", "commune") or not ref:
        raise NotFoundError(
            f"Phạm vi '{scope}' không hợp lệ (province, district:MÃ hoặc commune:MÃ)."
        )
    model = {"province": Province, "district": District, "commune": Commune}[kind]
    cond = (
        model.code == ref if not ref.isdecimal() else or_(model.code == ref, model.id == int(ref))
    )
    target = session.scalars(select(model).where(cond)).first()
    noun = {"province": "tỉnh", "district": "huyện", "commune": "xã"}[kind]
    if target is None:
        raise NotFoundError(f"Không tìm thấy {noun} '{ref}'.")
    attr = {"province": "province_id", "district": "district_id", "commune": "id"}[kind]
    chosen = [c for c in communes if getattr(c, attr) == target.id]
    if kind == "commune" and not chosen:
        raise NotFoundError(f"Xã '{ref}' không tồn tại trong kỳ này.")
    return chosen, scope


_PLAYED = (
    f"CASE WHEN t.phase IN ({', '.join(repr(p) for p in PLAYED_PHASES)}) THEN 1 "
    f"WHEN t.phase IN ({', '.join(repr(p) for p in PLAYED_IF_STARTED)}) "
    "AND t.started_at_ms IS NOT NULL THEN 1 ELSE 0 END"
)
_WINDOW = (
    "a.slot_ms >= :start AND a.slot_ms < :end AND a.status <> 'cancelled' "
    f"AND ({_PLAYED} = 1 OR a.slot_ms + a.duration_ms + :settle <= :now)"
)
# One row per target aimed in the window, attributed to (commune, village). Targets carry
# the village and commune of their node when the airing was aimed at it (written by the
# dispatcher): exactly the "as it was" attribution, no join needed. Targets written without
# them are attributed through the register (placement, membership) at the slot time.
# Targets written without a commune/village, attributed through the register (placement,
# membership) at the slot time; driven from the targets' own indexes on village_id/commune_id
# (usually no such row). Columns: airing, commune, village, played.
_RESOLVED = (
    f"SELECT a.id, m.commune_id, p.village_id, {_PLAYED} "
    "FROM airing_target t JOIN airing a ON a.id = t.airing_id "
    "JOIN node_placement p ON p.node_id = t.node_id AND p.valid_from_ms <= a.slot_ms "
    "AND (p.valid_to_ms IS NULL OR p.valid_to_ms > a.slot_ms) "
    "JOIN village_membership m ON m.village_id = p.village_id "
    "AND m.valid_from_ms <= a.slot_ms AND (m.valid_to_ms IS NULL OR m.valid_to_ms > a.slot_ms) "
    f"WHERE {_WINDOW} AND (t.village_id IS NULL OR t.commune_id IS NULL) "
    "{resolved}"
)
_RECORDED = f"WHERE {_WINDOW} AND t.village_id IS NOT NULL AND t.commune_id IS NOT NULL "
# One row per target aimed in the window, attributed to (commune, village). Targets carry
# the village and commune of their node when the airing was aimed at it (written by the
# dispatcher): exactly the "as it was" attribution, no join needed.
_TARGETS_CTE = (
    "WITH tt AS ("
    f"SELECT a.id AS airing_id, t.commune_id AS c, t.village_id AS v, {_PLAYED} AS p "
    "FROM airing a {join} airing_target t ON t.airing_id = a.id "
    + _RECORDED
    + "{recorded} UNION ALL "
    + _RESOLVED
    + ") "
)
# The attributed targets themselves, for the evidence folder (``evidence.py``).
TARGET_ROWS_SQL = (
    _TARGETS_CTE + "SELECT tt.c, tt.v, tt.airing_id, tt.p, a.slot_ms, "
    "a.duration_ms, a.language FROM tt JOIN airing a ON a.id = tt.airing_id "
    "ORDER BY tt.c, tt.v, tt.airing_id"
)
# A village counts an airing once however many of its clusters got it, and has played it
# when any of them did. The two aggregations below first reduce the recorded targets per
# (commune, village, airing), resp. per (airing, commune), in the order of a covering index
# (``ix_airing_target_village_outcome``, ``ix_airing_target_outcome``, migration 0015), so
# the database groups while it walks the index instead of sorting every target of the
# window; the outer query then reduces the few remaining rows (and any resolved target of
# the same airing: DISTINCT and MAX make the result what grouping the raw targets gives).
_PER_VILLAGE_SQL = (
    "WITH tt AS ("
    f"SELECT t.airing_id AS airing_id, t.commune_id AS c, t.village_id AS v, MAX({_PLAYED}) "
    "AS p FROM {per_village_from} "
    + _RECORDED
    + "{recorded} GROUP BY t.commune_id, t.village_id, t.airing_id "
    "UNION ALL " + _RESOLVED + ") "
    "SELECT c, v, COUNT(DISTINCT airing_id), "
    "COUNT(DISTINCT CASE WHEN p = 1 THEN airing_id END) FROM tt GROUP BY c, v"
)
_HEARD_SQL = (
    "WITH tt AS ("
    f"SELECT a.id AS airing_id, t.commune_id AS c, MIN(t.village_id) AS v, MAX({_PLAYED}) "
    "AS p FROM airing a {airing_scan} {join} airing_target t {outcome_index} "
    "ON t.airing_id = a.id " + _RECORDED + "{recorded} GROUP BY a.id, t.commune_id "
    "UNION ALL " + _RESOLVED + ") "
    "SELECT g.c, a.id, a.slot_ms, a.duration_ms, a.language FROM "
    "(SELECT c, airing_id FROM tt GROUP BY airing_id, c HAVING MAX(p) = 1) g "
    "JOIN airing a ON a.id = g.airing_id"
)
_OUTCOME_INDEXES = ("ix_airing_target_outcome", "ix_airing_target_village_outcome")


@dataclass
class AiringEvidence:
    """What the airing targets prove for the window."""

    aimed_played: dict[tuple[int, int], tuple[int, int]]  # (commune, village) -> counts
    # commune -> airings heard in at least one of its villages: (id, slot, duration, lang)
    heard: dict[int, list[tuple[int, int, int, str]]]


def _target_query(
    session: Session,
    sql: str,
    start_ms: int,
    end_ms: int,
    evaluated_ms: int,
    commune_ids: list[int] | None,
) -> tuple[str, dict]:
    params: dict = {"start": start_ms, "end": end_ms, "settle": SETTLE_MS, "now": evaluated_ms}
    clauses = {"recorded": "", "resolved": ""}
    if commune_ids is not None:
        marks = ", ".join(f":c{i}" for i in range(len(commune_ids))) or "NULL"
        params.update({f"c{i}": c for i, c in enumerate(commune_ids)})
        clauses = {
            "recorded": f"AND t.commune_id IN ({marks})",
            "resolved": f"AND m.commune_id IN ({marks})",
        }
    # Province-wide: walk the window's airings, then their targets. Scoped: let the planner
    # start from the targets of the asked communes (pinning airings first would scan every
    # airing's targets for each commune: seconds instead of milliseconds).
    join = clauses["join"] = ordered_join(session) if commune_ids is None else "JOIN"
    clauses.update(outcome_index="", airing_scan="")
    clauses["per_village_from"] = f"airing_target t {join} airing a ON a.id = t.airing_id"
    if commune_ids is None and _sqlite_outcome_indexes(session):
        # SQLite without statistics would drive from the slot index (airings out of id
        # order: a sort of every target); pinned, it walks airings by id and each one's
        # targets in index order. PostgreSQL's planner is trusted.
        clauses.update(
            outcome_index=f"INDEXED BY {_OUTCOME_INDEXES[0]}",
            airing_scan="NOT INDEXED",
        )
        if "{per_village_from}" in sql and _short_window(session, start_ms, end_ms):
            # The per-village walk in (commune, village) order reads every target stored,
            # whatever the window: for the few edge days around rolled months of a year it
            # is cheaper to take the window's airings and sort their targets (measured on
            # the bench's province: 10 days 0.09 s instead of 0.29 s; even at a quarter of
            # a year's airings the full walk wins, so the cut is a fifth).
            clauses["per_village_from"] = (
                f"airing a {join} airing_target t INDEXED BY {_OUTCOME_INDEXES[0]} "
                "ON t.airing_id = a.id"
            )
        else:
            clauses["per_village_from"] = (
                f"airing_target t INDEXED BY {_OUTCOME_INDEXES[1]} {join} airing a "
                "ON a.id = t.airing_id"
            )
    return sql.format(**clauses), params


def _short_window(session: Session, start_ms: int, end_ms: int) -> bool:
    """Whether the window holds under a fifth of the airings stored (two index counts, one
    statement)."""
    return bool(
        session.execute(
            text(
                "SELECT (SELECT COUNT(*) FROM airing WHERE slot_ms >= :a AND slot_ms < :b) * 5 "
                "< (SELECT COUNT(*) FROM airing)"
            ),
            {"a": start_ms, "b": end_ms},
        ).scalar_one()
    )


def _sqlite_outcome_indexes(session: Session) -> bool:
    """Whether the database is SQLite and has both covering indexes (a file made before
    migration 0015 and not upgraded lacks them: then no hint, same answer, slower)."""
    if session.get_bind().dialect.name != "sqlite":
        return False
    marks = ", ".join(f"'{n}'" for n in _OUTCOME_INDEXES)
    found = session.execute(
        text(f"SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name IN ({marks})")
    )
    return found.scalar() == len(_OUTCOME_INDEXES)


def _aimed_played(session: Session, *window) -> dict[tuple[int, int], tuple[int, int]]:
    """(commune, village) -> (airings aimed, airings played), grouped by the database."""
    sql, params = _target_query(session, _PER_VILLAGE_SQL, *window)
    return {
        (c, v): (aimed, played or 0) for c, v, aimed, played in stream_rows(session, sql, params)
    }


def _heard(session: Session, *window) -> dict[int, list[tuple[int, int, int, str]]]:
    """commune -> the airings heard in at least one of its villages."""
    sql, params = _target_query(session, _HEARD_SQL, *window)
    heard: dict[int, list[tuple[int, int, int, str]]] = defaultdict(list)
    for c, aid, slot, duration, language in stream_rows(session, sql, params):
        heard[c].append((aid, slot, duration or 0, language_key(language)))
    return heard


def _airing_evidence_async(
    session: Session, start_ms: int, end_ms: int, evaluated_ms: int, commune_ids: list[int] | None
) -> Callable[[], AiringEvidence]:
    """Start the two airing aggregations (a province has about a million targets a quarter;
    the database groups them and a few thousand rows come back), each on a connection of
    its own, while this thread reads the transitions; returns the function that waits.

    All three are mostly database work (SQLite releases the GIL while it aggregates), so on
    two cores the evaluation takes about as long as the slowest instead of their sum. The
    other connections see committed rows only, which is what an evaluation of history reads
    anyway; an in-memory database, a session bound to one connection, or pending changes
    in the session fall back to running them here, in order."""
    window = (start_ms, end_ms, evaluated_ms, commune_ids)
    bind = session.get_bind()
    in_memory = bind.dialect.name == "sqlite" and bind.url.database in (None, "", ":memory:")
    if not isinstance(bind, Engine) or in_memory or session.new or session.dirty or session.deleted:
        return lambda: AiringEvidence(_aimed_played(session, *window), _heard(session, *window))

    def on_own_connection(fn):
        with Session(bind) as other:
            return fn(other, *window)

    executor = _query_pool()
    aimed = executor.submit(on_own_connection, _aimed_played)
    heard = executor.submit(on_own_connection, _heard)
    return lambda: AiringEvidence(aimed.result(), heard.result())


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _query_pool() -> ThreadPoolExecutor:
    """One bounded pool for every evaluation's parallel queries (min(4, CPUs) threads), not a
    pool per evaluation: concurrent requests share it, so they cannot multiply the threads
    (and database connections) the process runs. Callers wait on its futures from outside
    it (API threads), so a full pool only queues, never deadlocks."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(
                max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="loa-8.3"
            )
        return _POOL


def _merge_evidence(parts: list[AiringEvidence], rolled: list[MonthRollup]) -> AiringEvidence:
    """The airing evidence of the raw ranges and the rolled months together: an airing
    lies in one of them (its slot), so counts add and lists join."""
    if len(parts) == 1 and not rolled:
        return parts[0]
    aimed: dict[tuple[int, int], tuple[int, int]] = {}
    heard: dict[int, list[tuple[int, int, int, str]]] = defaultdict(list)
    for source in [
        *((p.aimed_played, p.heard) for p in parts),
        *((m.aimed, m.heard) for m in rolled),
    ]:
        for key, (a, p) in source[0].items():
            a0, p0 = aimed.get(key, (0, 0))
            aimed[key] = (a0 + a, p0 + p)
        for c, rows in source[1].items():
            heard[c].extend(rows)
    return AiringEvidence(aimed, dict(heard))


def _covering_attestation(rows: list[ManualAttestation], last_day: date):
    covering = [r for r in rows if r.attested_on <= last_day <= r.valid_until]
    if covering:
        return max(covering, key=lambda r: (r.attested_on, r.id)), None
    earlier = [r for r in rows if r.attested_on <= last_day]
    return None, (max(earlier, key=lambda r: (r.attested_on, r.id)) if earlier else None)


# --------------------------------------------------------------------------- verdicts


@dataclass
class _Facts:
    """Everything read for one evaluation, gathered before any commune is judged."""

    thresholds: Thresholds
    windows: dict[int, tuple[int, int]]  # commune -> its part of the period
    village_windows: dict[int, dict[int, list[iv.Interval]]]  # commune -> village -> window
    villages: dict[int, Village]
    village_names: dict[int, str]
    spans_by_village: dict[int, list[history.Span]]
    available: dict[str, list[iv.Interval]]
    states: dict[str, str]
    evidence: AiringEvidence
    attestations: dict[int, list[ManualAttestation]]
    districts: dict[int, District]
    last_day: date
    observed: list[iv.Interval] = field(default_factory=list)  # the watch, in the window
    unobserved: list[iv.Interval] = field(default_factory=list)  # the rest of the window
    bridges: dict[str, list[iv.Interval]] = field(default_factory=dict)  # node continuity
    first_cluster_after: dict[int, int] = field(default_factory=dict)  # commune -> ms
    members: dict[int, list[int]] = field(default_factory=dict)  # commune -> itself + folded
    _watched_in: dict[tuple[int, int], list[iv.Interval]] = field(default_factory=dict)

    def watched_in(self, window: iv.Interval) -> list[iv.Interval]:
        """The watch clipped to one window (villages mostly share the period's window)."""
        got = self._watched_in.get(window)
        if got is None:
            got = self._watched_in[window] = iv.clip(self.observed, *window)
        return got

    predecessors: dict[int, list[dict]] = field(default_factory=dict)
    rolled: list[MonthRollup] = field(default_factory=list)  # months judged from roll-ups

    _rolled_in: dict[tuple[iv.Interval, ...], list[MonthRollup]] = field(default_factory=dict)

    def rolled_in(self, window: list[iv.Interval]) -> list[MonthRollup]:
        """The rolled months inside ``window`` (each lies wholly in or out of it); kept per
        window, which most villages share."""
        key = tuple(window)
        got = self._rolled_in.get(key)
        if got is None:
            got = self._rolled_in[key] = [
                m for m in self.rolled if any(a <= m.start_ms and m.end_ms <= b for a, b in window)
            ]
        return got


def _village_verdict(
    village: Village,
    name: str,
    window: list[iv.Interval],
    spans: list[history.Span],
    f: _Facts,
    aimed_played: tuple[int, int] | None,
) -> VillageVerdict:
    """One village over its window. In service from its first cluster's placement (before
    that: "chưa đưa vào sử dụng", not counted); of the in-service time only what Loa
    observed counts (the watch, plus gaps a cluster proved it ran through); availability
    is the observed time at least one cluster was available over the observed time."""
    th = f.thresholds
    window_ms = iv.total(window)
    title = village_title(name)
    # Closed months rolled up (``rollups``) count from their stored sums, the rest of the
    # window from the raw rows; a month is rolled only when it lies wholly in the window.
    rolled = f.rolled_in(window) if f.rolled else []
    raw_window = iv.subtract(window, [(m.start_ms, m.end_ms) for m in rolled]) if rolled else window
    m = measure(raw_window, spans, f)
    nodes, first = m.nodes, m.first
    covered_ms = iv.total(iv.union(*m.covered)) if m.covered else 0
    for month in rolled:
        vr = month.villages.get(village.id)
        if vr is None:
            continue
        first = vr.first_ms if first is None else min(first, vr.first_ms)
        covered_ms += vr.covered_ms
        for node, placed_ms, up_ms, seen_ms in vr.nodes:
            sums = nodes.setdefault(node, [0, 0, 0, 0])
            sums[0] += placed_ms
            sums[1] += up_ms
            sums[2] += seen_ms
    clusters = [
        ClusterEvidence(node, placed, up, up / seen if seen else 0.0, seen, bridged)
        for node, (placed, up, seen, bridged) in sorted(nodes.items())
    ]
    continuity = m.continuity
    reasons: list[Reason] = []
    aimed, played = aimed_played or (0, 0)
    aired_ratio = played / aimed if aimed else None
    if not clusters or first is None:
        reasons.append(
            Reason(
                "no_cluster",
                f"{title}: không có cụm loa nào trong kỳ",
                village_id=village.id,
                value=0.0,
                threshold=th.availability,
            )
        )
        seen_window = iv.intersect(window, f.observed)
        coverage = iv.total(seen_window) / window_ms if window_ms else None
        return VillageVerdict(
            village.id,
            village.code,
            name,
            window_ms,
            False,
            0.0,
            aired_ratio,
            aimed,
            played,
            clusters,
            reasons,
            "fail",
            coverage,
            window_ms,
            iv.total(seen_window),
            None,
        )
    # In service from the first placement to the end of the window: a cluster taken away
    # and not replaced leaves the village unreached, which is a failure.
    end = window[-1][1]
    in_service = iv.clip(raw_window, first, end)
    service_ms = iv.total(in_service)
    # Observed: the watch over the in-service time, plus gaps a cluster proved it ran.
    watched_all = not f.unobserved
    observed = (
        in_service if watched_all else iv.union(iv.intersect(in_service, f.observed), *m.bridges)
    )
    observed_ms = iv.total(observed)
    for month in rolled:  # no continuity inside a rolled month: the watch alone
        lo = max(first, month.start_ms)
        if lo < month.end_ms:
            service_ms += month.end_ms - lo
            observed_ms += (
                month.end_ms - lo
                if watched_all
                else iv.total(iv.clip(f.watched_in((month.start_ms, month.end_ms)), lo, end))
            )
    coverage = observed_ms / service_ms if service_ms else 0.0
    availability = covered_ms / observed_ms if observed_ms else None
    verdict = "pass"
    if not _at_least(observed_ms, service_ms, th.coverage):
        verdict = "insufficient_data"
        reasons.append(
            Reason(
                "insufficient_data",
                f"{title}: chỉ giám sát được {percent(coverage)} thời gian sử dụng trong kỳ "
                f"(cần {percent(th.coverage)}): không đủ dữ liệu",
                level="insufficient",
                village_id=village.id,
                value=coverage,
                threshold=th.coverage,
            )
        )
    elif not _at_least(covered_ms, observed_ms, th.availability):
        verdict = "fail"
        reasons.append(
            Reason(
                "availability_low",
                f"{title}: khả dụng {percent(availability)} < {percent(th.availability)}",
                village_id=village.id,
                value=availability,
                threshold=th.availability,
                detail={"observed_ms": observed_ms, "available_ms": covered_ms},
            )
        )
    if aimed == 0:
        verdict = "fail"
        reasons.append(
            Reason(
                "nothing_aimed",
                f"{title}: không có buổi phát nào tới thôn trong kỳ",
                village_id=village.id,
                value=None,
                threshold=th.aired,
            )
        )
    elif not _at_least(played, aimed, th.aired):
        verdict = "fail"
        reasons.append(
            Reason(
                "aired_low",
                f"{title}: phát {played}/{aimed} buổi ({percent(aired_ratio)}) "
                f"< {percent(th.aired)}",
                village_id=village.id,
                value=aired_ratio,
                threshold=th.aired,
                detail={"aimed": aimed, "played": played},
            )
        )
    if first > window[0][0]:
        reasons.append(
            Reason(
                "in_service_from",
                f"{title}: đưa vào sử dụng từ {format_date(first)}; thời gian trước đó chưa "
                "đưa vào sử dụng, không tính",
                level="info",
                village_id=village.id,
            )
        )
    passed = {"pass": True, "fail": False}.get(verdict)
    return VillageVerdict(
        village.id,
        village.code,
        name,
        window_ms,
        passed,
        availability,
        aired_ratio,
        aimed,
        played,
        clusters,
        reasons,
        verdict,
        coverage,
        service_ms,
        observed_ms,
        first,
        continuity,
    )


def evaluate(
    session: Session,
    period: Period,
    *,
    now: int | None = None,
    scope: str | None = None,
    thresholds: Thresholds | None = None,
    allowed_commune_ids: Collection[int] | None = None,
    rollups: bool = False,
) -> Evaluation:
    """Judge every commune of the scope over the period (so far), in a fixed number of
    queries whatever the number of communes. ``allowed_commune_ids`` narrows the answer to
    the communes a user may see (a commune officer's roll-up counts only their own).

    ``rollups``: closed months are taken from the monthly roll-ups (``indicator.rollups``,
    same verdicts, tested) instead of the raw rows. Off for the evidence and the drill-down,
    which show the raw rows themselves (``Evaluation.facts``)."""
    evaluated_ms = now_ms() if now is None else now
    start_ms, end_ms = period.evaluation_window(evaluated_ms)
    province = current_thresholds(session) if thresholds is None else None
    parts = sets_for(session, start_ms, end_ms)
    evaluations = []
    for lo, hi, criteria in parts:
        part = (
            period
            if len(parts) == 1
            else Period(
                period.key,
                period.kind,
                lo,
                hi,
                f"{period.label}, phần từ {format_date(lo)} đến {format_date(hi - 1)}",
                f"{period.title} (phần từ {format_date(lo)} đến {format_date(hi - 1)})",
            )
        )
        th = thresholds or criteria.thresholds(province)
        e = _evaluate(
            session,
            part,
            evaluated_ms,
            scope,
            th,
            allowed_commune_ids,
            criteria,
            rollups,
            [b for _a, b, _c in parts[:-1]],
        )
        e.criteria = criteria
        evaluations.append(e)
    last = evaluations[-1]
    if len(evaluations) > 1:
        # The set in force at the period's end answers at the top; each part keeps its own.
        last.parts, last.whole = evaluations, period
    return last


def _evaluate(
    session: Session,
    period: Period,
    evaluated_ms: int,
    scope: str | None,
    th: Thresholds,
    allowed_commune_ids: Collection[int] | None,
    criteria: Criteria,
    rollups: bool = False,
    cuts: list[int] | None = None,
) -> Evaluation:
    start_ms, end_ms = period.evaluation_window(evaluated_ms)
    communes, scope = _select_communes(session, scope, start_ms, end_ms)
    if allowed_commune_ids is not None:
        allowed = set(allowed_commune_ids)
        communes = [c for c in communes if c.id in allowed]
    province_wide = scope == "province" and allowed_commune_ids is None
    communes, folded = _fold_merged(session, communes, start_ms, end_ms, province_wide)
    commune_ids = [c.id for c in communes] + sorted(folded)
    ids_filter = None if province_wide else commune_ids
    name_at = end_ms - 1
    commune_names = history.names_at(session, "commune", commune_ids, name_at)
    windows = {c.id: _commune_window(c, start_ms, end_ms) for c in communes}
    for old, (new, old_window) in folded.items():  # a merged commune's days count for
        windows[old] = old_window  # its successor, which starts with the earliest of them
        windows[new] = (min(windows[new][0], old_window[0]), windows[new][1])

    # Villages of each commune in the period, each with the part of it they belonged.
    village_windows: dict[int, dict[int, list[iv.Interval]]] = defaultdict(dict)
    for span in history.memberships(session, start_ms, end_ms, ids_filter):
        if span.owner_id not in windows:
            continue
        part = iv.clip([(span.start_ms, span.end_ms)], *windows[span.owner_id])
        if part:
            owner = folded[span.owner_id][0] if span.owner_id in folded else span.owner_id
            vw = village_windows[owner]
            vw[span.member_id] = iv.union(vw.get(span.member_id, []), part)
    village_ids = sorted({v for vw in village_windows.values() for v in vw})
    villages: dict[int, Village] = {}
    for i in range(0, len(village_ids), 900):
        villages.update(
            {
                v.id: v
                for v in session.scalars(
                    select(Village).where(Village.id.in_(village_ids[i : i + 900]))
                )
            }
        )
    spans_by_village = history.nodes_by_village(
        session, start_ms, end_ms, None if province_wide else village_ids
    )
    node_ids = sorted({s.member_id for v in village_ids for s in spans_by_village.get(v, [])})
    observed = watched(session, start_ms, end_ms)
    rolled: list[MonthRollup] = []
    if rollups:
        # A month is rolled only where no commune or village window starts or ends inside
        # it, so every window holds it whole or not at all.
        bounds = {b for w in windows.values() for b in w}
        bounds.update(
            b for vw in village_windows.values() for w in vw.values() for x in w for b in x
        )
        rolled = load_rollups(
            session,
            months_within(start_ms, end_ms, bounds, cuts or ()),
            evaluated_ms,
            observed,
            {v: spans_by_village.get(v, []) for v in village_ids},
            None if province_wide else village_ids,
            lambda s, a, b, now: (_aimed_played(s, a, b, now, None), _heard(s, a, b, now, None)),
            SETTLE_MS,
        )
    raw_ranges = iv.complement([(m.start_ms, m.end_ms) for m in rolled], start_ms, end_ms)
    waits = [
        _airing_evidence_async(session, lo, hi, evaluated_ms, ids_filter) for lo, hi in raw_ranges
    ]
    available: dict[str, list[iv.Interval]] = {}
    for lo, hi in raw_ranges:
        for node, ivs in available_intervals(
            session, lo, hi, None if province_wide else node_ids
        ).items():
            if ivs or node not in available:
                available.setdefault(node, []).extend(ivs)
    airing_evidence = _merge_evidence([w() for w in waits], rolled)
    attestations: dict[int, list[ManualAttestation]] = defaultdict(list)
    for row in session.scalars(select(ManualAttestation)):
        attestations[row.commune_id].append(row)
    facts = _Facts(
        th,
        windows,
        village_windows,
        villages,
        history.names_at(session, "village", village_ids, name_at),
        spans_by_village,
        available,
        states_at(session, end_ms - 1, None if province_wide else node_ids),
        airing_evidence,
        attestations,
        {d.id: d for d in session.scalars(select(District))},
        ms_to_dt(end_ms - 1).date(),
    )
    facts.members = {c.id: [c.id] for c in communes}
    for old, (new, _w) in folded.items():
        facts.members[new].append(old)
    facts.predecessors = _predecessors(session, [c.id for c in communes], end_ms)
    facts.observed = observed
    facts.rolled = rolled
    facts.unobserved = iv.complement(facts.observed, start_ms, end_ms)
    if facts.unobserved:
        facts.bridges = continuity(session, start_ms, end_ms, None if province_wide else node_ids)
    facts.first_cluster_after = _first_cluster_after(
        session,
        [
            c.id
            for c in communes
            if not any(spans_by_village.get(v) for v in village_windows.get(c.id, {}))
        ],
        end_ms,
    )

    verdicts = [_judge_commune(c, commune_names.get(c.id, c.name), facts) for c in communes]
    province_played = {
        aid: (duration, language) for v in verdicts for aid, _slot, duration, language in v.heard
    }
    totals_by_language = dict.fromkeys(LANGUAGE_ORDER, 0)
    for duration, language in province_played.values():
        totals_by_language[language] += duration
    states_total = dict.fromkeys(STATE_ORDER, 0)
    for v in verdicts:
        for k, n in v.clusters_by_state.items():
            states_total[k] += n
    province = session.get(Province, communes[0].province_id) if communes else None
    if province is None:
        province = session.scalars(select(Province).limit(1)).first()
    return Evaluation(
        period,
        start_ms,
        end_ms,
        evaluated_ms,
        th,
        province.name if province else "",
        scope,
        verdicts,
        summarize(
            verdicts, criteria.label, observed=iv.total(facts.observed) / (end_ms - start_ms)
        ),
        # Since 01/07/2025 there are no districts: a period reaching past it groups by
        # commune only (the old district stays a column, "Huyện (cũ)").
        district_rollups(verdicts, criteria.label) if end_ms <= DISTRICTS_ABOLISHED_MS else [],
        len(province_played),
        sum(d for d, _ in province_played.values()),
        totals_by_language,
        states_total,
        unobserved=facts.unobserved,
        facts=facts,
    )


def _week_counts(slots: list[int], week_bounds: list[tuple[int, int]]) -> list[int]:
    """Airings per week, ``slots`` sorted: two binary searches a week instead of a step per
    airing (a province year is some 150,000 airings heard). The last week takes every slot
    from its start on, as ``week_index`` does; slots before the first week count nowhere."""
    if not week_bounds:
        return []
    starts = [bisect_left(slots, a) for a, _b in week_bounds]
    return [b - a for a, b in zip(starts, [*starts[1:], len(slots)], strict=True)]


def _judge_commune(c: Commune, name: str, f: _Facts) -> CommuneVerdict:
    lo, hi = f.windows[c.id]
    vverdicts = []
    commune_nodes: set[str] = set()
    for vid, vwindow in sorted(
        f.village_windows.get(c.id, {}).items(), key=lambda kv: f.villages[kv[0]].code
    ):
        village = f.villages[vid]
        counts = [
            f.evidence.aimed_played[(m, vid)]
            for m in f.members.get(c.id, [c.id])
            if (m, vid) in f.evidence.aimed_played
        ]
        vv = _village_verdict(
            village,
            f.village_names.get(vid, village.name),
            vwindow,
            f.spans_by_village.get(vid, []),
            f,
            (sum(a for a, _ in counts), sum(p for _, p in counts)) if counts else None,
        )
        commune_nodes.update(ce.node_id for ce in vv.clusters)
        vverdicts.append(vv)
    heard = list(
        {
            p[0]: p
            for m in f.members.get(c.id, [c.id])
            for p in f.evidence.heard.get(m, ())
            if lo <= p[1] < hi
        }.values()
    )
    heard.sort(key=itemgetter(1))
    measured = [v for v in vverdicts if v.in_service_from_ms is not None]
    service_from = min((v.in_service_from_ms for v in measured), default=None)
    # Weeks are counted from the station's first cluster in service.
    wlo = lo if service_from is None else max(lo, service_from)
    week_bounds = weeks(wlo, hi)
    week_counts = _week_counts([p[1] for p in heard], week_bounds)
    by_language = dict.fromkeys(LANGUAGE_ORDER, 0)
    for _aid, _slot, duration, language in heard:
        by_language[language] += duration
    cluster_states = dict.fromkeys(STATE_ORDER, 0)
    for node in commune_nodes:
        cluster_states[f.states.get(node, "unknown")] += 1
    station = (
        "ip" if commune_nodes else c.station_kind if c.station_kind in MANUAL_KINDS else "none"
    )
    district = f.districts.get(c.district_id) if c.district_id else None
    verdict = CommuneVerdict(
        c.id,
        c.code,
        name,
        c.district_id,
        district.name if district else None,
        c.station_kind,
        station,
        lo,
        hi,
        False,
        False,
        [],
        vverdicts,
        len(commune_nodes),
        [(a, b, n) for (a, b), n in zip(week_bounds, week_counts, strict=True)],
        len(heard),
        sum(p[2] for p in heard),
        by_language,
        cluster_states,
        heard=heard,
    )
    verdict.predecessors = f.predecessors.get(c.id, [])
    verdict.in_service_from_ms = service_from
    verdict.in_service_ms = sum(v.in_service_ms for v in measured)
    verdict.observed_ms = sum(v.observed_ms for v in measured)
    verdict.first_cluster_after_ms = f.first_cluster_after.get(c.id)
    if verdict.in_service_ms:
        verdict.coverage = verdict.observed_ms / verdict.in_service_ms
    verdict.weeks = [
        w
        for w in verdict.weeks
        if _at_least(iv.total(f.watched_in((w[0], w[1]))), w[1] - w[0], f.thresholds.coverage)
    ]
    verdict.skipped_weeks = len(week_bounds) - len(verdict.weeks)
    manual_path = c.station_kind in MANUAL_KINDS or not commune_nodes
    attestation, expired = _covering_attestation(f.attestations.get(c.id, []), f.last_day)
    if manual_path and attestation is not None:
        _judge_manual(verdict, attestation)
    elif c.station_kind in MANUAL_KINDS:
        _fail_unattested(verdict, expired, f.last_day)
    elif not commune_nodes and verdict.first_cluster_after_ms is not None:
        _not_in_service(verdict)
    else:
        _judge_telemetry(verdict, f.thresholds)
    verdict.verdict = (
        "pass"
        if verdict.passed
        else verdict.verdict
        if verdict.verdict in ("insufficient_data", "not_in_service")
        else "fail"
    )
    return verdict


def _fold_merged(
    session: Session, communes: list[Commune], start_ms: int, end_ms: int, province_wide: bool
) -> tuple[list[Commune], dict]:
    """Communes merged during the window into one that is answered for: judged as part of
    their successor (its name, their villages on the days they had them), not as a line of
    their own. Returns the communes to judge and {merged id: (successor id, its window)}."""
    ids = {c.id for c in communes}
    pool = communes if province_wide else history.communes_existing(session, start_ms, end_ms)
    by_id = {c.id: c for c in pool}
    folded: dict[int, tuple[int, tuple[int, int]]] = {}
    for c in pool:
        if c.retired_ms is None or not start_ms < c.retired_ms < end_ms:
            continue
        target, hops = c.merged_into_id, 0
        while target is not None and target not in ids and hops < 8:
            nxt = by_id.get(target)
            target, hops = (nxt.merged_into_id if nxt else None), hops + 1
        if target in ids:
            folded[c.id] = (target, _commune_window(c, start_ms, end_ms))
    return [c for c in communes if c.id not in folded], folded


def _predecessors(session: Session, commune_ids: list[int], end_ms: int) -> dict:
    """commune -> the communes merged into it up to ``end_ms``, with the date."""
    if not commune_ids:
        return {}
    out: dict[int, list[dict]] = defaultdict(list)
    rows = []
    for i in range(0, len(commune_ids), 900):
        rows += list(
            session.scalars(
                select(Commune).where(
                    Commune.merged_into_id.in_(commune_ids[i : i + 900]),
                    Commune.retired_ms <= end_ms,
                )
            )
        )
    for r in sorted(rows, key=lambda r: (r.retired_ms, r.code)):
        # the name it bore on its last day (a handful of rows: one lookup each)
        name = history.name_at(session, "commune", r.id, r.retired_ms - 1) or r.name
        out[r.merged_into_id].append(
            {"id": r.id, "code": r.code, "name": name, "merged_on": format_date(r.retired_ms)}
        )
    return out


def _first_cluster_after(session: Session, commune_ids: list[int], end_ms: int) -> dict:
    """For communes with no cluster in the period: when their first cluster was placed
    after it (their IP station was not yet in service), by the register as it is."""
    if not commune_ids:
        return {}
    p, m = NodePlacement, VillageMembership
    out: dict[int, int] = {}
    for i in range(0, len(commune_ids), 900):
        rows = session.execute(
            select(m.commune_id, p.valid_from_ms)
            .join(m, m.village_id == p.village_id)
            .where(m.commune_id.in_(commune_ids[i : i + 900]), p.valid_from_ms >= end_ms)
        )
        for cid, at in rows:
            out[cid] = min(out.get(cid, at), at)
    return out


def _not_in_service(v: CommuneVerdict) -> None:
    v.passed, v.verdict = False, "not_in_service"
    v.reasons.append(
        Reason(
            "not_in_service",
            f"Đài IP của xã chưa đưa vào sử dụng trong kỳ (cụm loa đầu tiên từ "
            f"{format_date(v.first_cluster_after_ms)})",
            level="info",
        )
    )


def _judge_manual(v: CommuneVerdict, row: ManualAttestation) -> None:
    v.passed, v.manual = True, True
    v.attestation = {
        "id": row.id,
        "attested_on": row.attested_on.strftime("%d/%m/%Y"),
        "valid_until": row.valid_until.strftime("%d/%m/%Y"),
        "inspector": row.inspector,
        "note": row.note,
        "station_kind": row.station_kind,
    }
    kind = {"fm": "FM", "wired": "hữu tuyến"}.get(row.station_kind, row.station_kind)
    v.station = row.station_kind if v.station == "none" else v.station
    v.reasons.append(
        Reason(
            "manual_attestation",
            f"Đài {kind}: xác nhận thủ công ngày {row.attested_on:%d/%m/%Y} "
            f"({row.inspector}), hiệu lực đến {row.valid_until:%d/%m/%Y}",
            level="info",
            detail=dict(v.attestation),
        )
    )
    _unmeasured(v)


def _unmeasured(v: CommuneVerdict) -> None:
    """Villages of a wired/FM commune are not measured: no figures, no village verdict."""
    for vv in v.villages:
        vv.passed, vv.reasons, vv.coverage = None, [], None
        vv.verdict = "pass" if v.passed else "fail"
        if not vv.clusters:
            vv.availability = vv.aired_ratio = None


def _fail_unattested(v: CommuneVerdict, expired: ManualAttestation | None, last_day: date) -> None:
    kind = {"fm": "FM", "wired": "hữu tuyến"}[v.station_kind]
    if expired is not None:
        text = (
            f"Đài {kind}: xác nhận ngày {expired.attested_on:%d/%m/%Y} đã hết hiệu lực "
            f"từ {expired.valid_until:%d/%m/%Y}"
        )
    else:
        text = f"Đài {kind}: chưa có xác nhận kiểm tra còn hiệu lực đến {last_day:%d/%m/%Y}"
    v.passed = False
    v.reasons.append(Reason("attestation_missing", text))
    _unmeasured(v)


def _judge_telemetry(v: CommuneVerdict, th: Thresholds) -> None:
    if not v.villages:
        v.reasons.append(Reason("no_village", "Xã không có thôn nào trong danh mục của kỳ"))
    if v.clusters == 0:
        v.reasons.append(Reason("no_cluster_in_commune", "Xã chưa có cụm loa nào trong kỳ"))
    elif th.broadcasts_per_week_min > 0:
        short = [(a, b, n) for a, b, n in v.weeks if n < th.broadcasts_per_week_min]
        if short:
            listed = ", ".join(f"{format_date(a)}–{format_date(b - 1)}" for a, b, _ in short[:4])
            more = f" và {len(short) - 4} tuần khác" if len(short) > 4 else ""
            v.reasons.append(
                Reason(
                    "weeks_without_broadcast",
                    f"Đài không phát đủ {th.broadcasts_per_week_min} buổi/tuần trong "
                    f"{len(short)}/{len(v.weeks)} tuần: {listed}{more}",
                    value=float(len(short)),
                    threshold=float(th.broadcasts_per_week_min),
                    detail={
                        "weeks": [
                            {"from": format_date(a), "to": format_date(b - 1), "airings": n}
                            for a, b, n in short
                        ]
                    },
                )
            )
    for vv in v.villages:
        v.reasons.extend(vv.reasons)
    if v.skipped_weeks:
        v.reasons.append(
            Reason(
                "weeks_unobserved",
                f"{v.skipped_weeks} tuần giám sát dưới {percent(th.coverage)} thời gian: không "
                "xét số buổi phát của các tuần đó",
                level="info",
            )
        )
    failing = [r for r in v.reasons if r.level == "fail"]
    v.passed = not failing and not any(vv.verdict == "insufficient_data" for vv in v.villages)
    if not failing and not v.passed:
        v.verdict = "insufficient_data"


# --------------------------------------------------------------------------- roll-ups


def summarize(
    verdicts: list[CommuneVerdict], label: str = "chỉ tiêu 8.3", observed: float | None = None
) -> Summary:
    """Counts as the province writes them: "9/13 xã đạt ...", then the communes that
    could not be judged (too little observed time, or not yet in service)."""
    passed = [v for v in verdicts if v.passed]
    stations = {"ip": 0, "fm": 0, "wired": 0, "none": 0}
    for v in verdicts:
        stations[v.station] = stations.get(v.station, 0) + 1
    failing = [
        {
            "id": v.id,
            "code": v.code,
            "name": v.name,
            "reasons": [r.text for r in v.reasons if r.level == "fail"],
        }
        for v in verdicts
        if v.verdict == "fail"
    ]
    insufficient = sum(1 for v in verdicts if v.verdict == "insufficient_data")
    idle = sum(1 for v in verdicts if v.verdict == "not_in_service")
    text = f"{len(passed)}/{len(verdicts)} xã đạt {label}"
    if insufficient:
        text += f"; {insufficient} xã không đủ dữ liệu"
    if idle:
        text += f"; {idle} xã chưa đưa vào sử dụng"
    return Summary(
        len(verdicts),
        len(passed),
        len(failing),
        sum(1 for v in passed if v.manual),
        text,
        stations,
        failing,
        insufficient,
        idle,
        observed,
    )


def district_rollups(
    verdicts: list[CommuneVerdict], label: str = "chỉ tiêu 8.3"
) -> list[DistrictRollup]:
    groups: dict[int, list[CommuneVerdict]] = defaultdict(list)
    for v in verdicts:
        if v.district_id is not None:
            groups[v.district_id].append(v)
    out = []
    for did, members in groups.items():
        n = sum(1 for v in members if v.passed)
        name = members[0].district_name or str(did)
        out.append(
            DistrictRollup(did, name, len(members), n, f"{name}: {n}/{len(members)} xã đạt {label}")
        )
    return sorted(out, key=lambda d: d.name)


# --------------------------------------------------------------------------- JSON


def village_as_dict(v: VillageVerdict) -> dict:
    return {
        "id": v.id,
        "code": v.code,
        "name": v.name,
        "passed": v.passed,
        "verdict": v.verdict,
        "verdict_text": VERDICT_TEXT.get(v.verdict, ""),
        "coverage": v.coverage,
        "coverage_text": (
            f"đã giám sát {percent(v.coverage)} thời gian kỳ báo cáo"
            if v.coverage is not None
            else None
        ),
        "in_service_from": (
            format_date(v.in_service_from_ms) if v.in_service_from_ms is not None else None
        ),
        "observed_hours": round(v.observed_ms / 3_600_000, 2),
        "continuity": v.continuity,
        "availability": v.availability,
        "aired_ratio": v.aired_ratio,
        "aimed": v.aimed,
        "played": v.played,
        # Written out rather than asdict(): asdict deep-copies field by field and was a
        # third of the time of a 3,000-cluster answer.
        "clusters": [
            {
                "node_id": c.node_id,
                "placed_ms": c.placed_ms,
                "available_ms": c.available_ms,
                "availability": c.availability,
                "observed_ms": c.observed_ms,
                "bridged_ms": c.bridged_ms,
            }
            for c in v.clusters
        ],
        "reasons": [r.as_dict() for r in v.reasons],
    }


def commune_as_dict(v: CommuneVerdict) -> dict:
    return {
        "id": v.id,
        "code": v.code,
        "name": v.name,
        "district": v.district_name,
        "station_kind": v.station_kind,
        "station": v.station,
        "passed": v.passed,
        "predecessors": v.predecessors,
        "verdict": v.verdict,
        "verdict_text": VERDICT_TEXT.get(v.verdict, ""),
        "coverage": v.coverage,
        "coverage_text": (
            f"đã giám sát {percent(v.coverage)} thời gian kỳ báo cáo"
            if v.coverage is not None
            else None
        ),
        "in_service_from": (
            format_date(v.in_service_from_ms) if v.in_service_from_ms is not None else None
        ),
        "manual": v.manual,
        "reasons": [r.as_dict() for r in v.reasons],
        "clusters": v.clusters,
        "clusters_by_state": v.clusters_by_state,
        "airings": v.airings,
        "hours_aired": round(v.aired_ms / 3_600_000, 2),
        "hours_by_language": {
            k: round(ms / 3_600_000, 2) for k, ms in v.aired_ms_by_language.items()
        },
        "weeks": [
            {"from": format_date(a), "to": format_date(b - 1), "airings": n} for a, b, n in v.weeks
        ],
        "attestation": v.attestation,
        "villages": [village_as_dict(x) for x in v.villages],
    }


def split_text(e: Evaluation) -> str | None:
    """The sentence that says a period was judged in parts, by which sets."""
    if not e.parts:
        return None
    pieces = [
        f"từ {format_date(p.start_ms)} đến {format_date(p.end_ms - 1)} theo "
        f"{p.criteria.name} ({p.criteria.legal_basis}): {p.summary.text}"
        for p in e.parts
        if p.criteria is not None
    ]
    return (
        f"Kỳ báo cáo được chia làm {len(e.parts)} phần theo bộ tiêu chí có hiệu lực: "
        + "; ".join(pieces)
        + "."
    )


def _part_as_dict(e: Evaluation) -> dict:
    return evaluation_as_dict(replace(e, parts=[], whole=None))


def evaluation_as_dict(e: Evaluation) -> dict:
    whole = e.whole or e.period
    start = e.parts[0].start_ms if e.parts else e.start_ms
    return {
        "period": {
            "key": whole.key,
            "label": whole.label,
            "from": format_date(start),
            "to": format_date(e.end_ms - 1),
            "start_ms": start,
            "end_ms": e.end_ms,
            "complete": e.end_ms == whole.end_ms,
        },
        "criteria": e.criteria.as_dict() if e.criteria else None,
        # A period spanning two criteria sets: the top level is the part judged by the set
        # in force at its end; "split" says so and carries every part in full.
        "split": {"text": split_text(e), "parts": [_part_as_dict(p) for p in e.parts]}
        if e.parts
        else None,
        "scope": e.scope,
        "province": e.province_name,
        "evaluated_ms": e.evaluated_ms,
        "thresholds": e.thresholds.as_dict(),
        "observed": e.summary.observed,
        "watch_gaps": [
            {"from": format_datetime(a), "to": format_datetime(b), "from_ms": a, "to_ms": b}
            for a, b in e.unobserved
        ],
        "summary": {
            **e.summary.as_dict(),
            "districts": [asdict(d) for d in e.districts],
            "airings": e.airings,
            "hours_aired": round(e.aired_ms / 3_600_000, 2),
            "hours_by_language": {
                k: round(ms / 3_600_000, 2) for k, ms in e.aired_ms_by_language.items()
            },
            "clusters_by_state": e.clusters_by_state,
            "hours_aired_text": hours(e.aired_ms),
        },
        "communes": [commune_as_dict(c) for c in e.communes],
    }
