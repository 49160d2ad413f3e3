"""Monthly roll-ups of what the indicator measures, so a year is judged from a dozen stored
months plus the raw rows of its open edges (docs/indicator.md, section 7).

Why months, not days: a cluster changes state about once a day, so a daily roll-up holds
as many rows as the transitions it sums and reading it costs what reading them costs. A
month holds one row per (village, cluster) and per (commune, village), and the list of
airings heard per commune (two a day), whatever the number of transitions.

What a month stores (computed for the whole province, province-wide queries, once):
per village its first placement in the month and the observed time at least one of its
clusters was available; per (village, cluster) placed, observed and available time and the
cluster's availability at the month's start and end; per (commune, village) the airings
aimed and played; per commune the airings heard. These are exactly the sums the verdict
takes (``evaluate._village_verdict``), over a window the month fills.

When a month is used (all must hold, else its days are read raw, and a month that could
be stored is computed again and stored):

* it is closed and lies wholly in every window it meets (no commune or village window
  starts or ends inside it), and no continuity record touches it;
* every airing it counted was over ``SETTLE_MS`` before the evaluation;
* the sum of its days' counters (raised by database triggers on every write, update or
  delete of a transition, airing or airing target, by any process) is unchanged: a late
  row for a closed day makes that month be computed again;
* the watch inside it and each village's placements inside it have the signature stored;
* each cluster's availability at the month's start is the one it had at the previous
  month's end (or, for the first month, the stored transitions' answer): a late transition
  changes the months after it too, until the cluster's next transition.

Writing happens on a connection of its own and is best effort: if the database is busy the
evaluation goes on from the raw rows and a later one stores the month.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import groupby
from operator import itemgetter

from sqlalchemy import Engine, delete, insert, select, text
from sqlalchemy.orm import Session

from controller.models import NodeContinuity
from indicator import intervals as iv
from indicator.availability import _initial_flags, available_intervals
from indicator.coverage import watched
from indicator.measure import measure
from indicator.models import (
    IndicatorDayVersion,
    IndicatorRollupAimed,
    IndicatorRollupHeard,
    IndicatorRollupMonth,
    IndicatorRollupNode,
    IndicatorRollupVillage,
)
from indicator.periods import DAY_MS, _midnight_ms
from indicator.sqlstream import stream_batches
from loa.timeutil import ms_to_dt
from registry import history

ICT_OFFSET_MS = 7 * 3_600_000
Airings = Callable[[Session, int, int, int], tuple[dict, dict]]


@dataclass
class VillageMonth:
    first_ms: int
    covered_ms: int
    placements: str
    nodes: list[tuple[str, int, int, int]] = field(default_factory=list)  # placed, up, seen
    states: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # node -> start, end


@dataclass
class MonthRollup:
    start_ms: int
    end_ms: int
    villages: dict[int, VillageMonth]
    aimed: dict[tuple[int, int], tuple[int, int]]
    heard: dict[int, list[tuple[int, int, int, str]]]


@dataclass
class _Observation:
    """The facts ``measure`` needs, for one month."""

    available: dict[str, list[iv.Interval]]
    observed: list[iv.Interval]
    unobserved: list[iv.Interval]
    bridges: dict = field(default_factory=dict)

    def watched_in(self, window: iv.Interval) -> list[iv.Interval]:
        return iv.clip(self.observed, *window)


# Every table of a month's roll-up, the month's own row first.
ROLLUP_MODELS = (
    IndicatorRollupMonth,
    IndicatorRollupVillage,
    IndicatorRollupNode,
    IndicatorRollupAimed,
    IndicatorRollupHeard,
)


def _day(ms: int) -> int:
    return (ms + ICT_OFFSET_MS) // DAY_MS


def _signature(items: list) -> str:
    return hashlib.blake2b(repr(items).encode(), digest_size=12).hexdigest()


def _placements(spans: list, lo: int, hi: int) -> str:
    return _signature(
        sorted(
            (s.member_id, max(s.start_ms, lo), min(s.end_ms, hi))
            for s in spans
            if s.start_ms < hi and s.end_ms > lo
        )
    )


def months_within(
    start_ms: int, end_ms: int, bounds: set[int], cuts: Sequence[int] = ()
) -> list[tuple[int, int]]:
    """Calendar months (ICT), cut in two at each of ``cuts`` (the day a criteria set takes
    over: fixed dates, so the pieces are the same for every period), lying wholly in
    ``[start, end)`` with no bound inside."""
    d = ms_to_dt(start_ms).date()
    d = date(d.year, d.month, 1)
    out = []
    while True:
        nxt = date(d.year + 1, 1, 1) if d.month == 12 else date(d.year, d.month + 1, 1)
        m0, m1 = _midnight_ms(d), _midnight_ms(nxt)
        if m0 >= end_ms:
            return out
        edges = [m0, *sorted(c for c in cuts if m0 < c < m1), m1]
        for a, b in zip(edges, edges[1:], strict=False):
            if a >= start_ms and b <= end_ms and not any(a < x < b for x in bounds):
                out.append((a, b))
        d = nxt


def _versions(session: Session, months: list[tuple[int, int]]) -> dict[int, int]:
    v = IndicatorDayVersion
    rows = session.execute(
        select(v.day, v.version).where(v.day >= _day(months[0][0]), v.day < _day(months[-1][1]))
    ).all()
    out = dict.fromkeys((m0 for m0, _ in months), 0)
    for day, version in rows:
        for m0, m1 in months:
            if _day(m0) <= day < _day(m1):
                out[m0] += version
    return out


def _touched_by_continuity(session: Session, months: list[tuple[int, int]]) -> set[int]:
    c = NodeContinuity
    rows = session.execute(
        select(c.from_ms, c.to_ms).where(c.from_ms < months[-1][1], c.to_ms > months[0][0])
    ).all()
    return {m0 for m0, m1 in months for a, b in rows if a < m1 and b > m0}


def load(
    session: Session,
    months: list[tuple[int, int]],
    evaluated_ms: int,
    observed: list[iv.Interval],
    spans_by_village: dict[int, list],
    village_ids: Sequence[int] | None,
    airings: Airings,
    settle_ms: int,
) -> list[MonthRollup]:
    """The usable roll-ups of ``months`` (computing and storing the ones missing or out of
    date); the months left out are read raw by the caller."""
    if not months:
        return []
    versions = _versions(session, months)  # read before any raw row (see the module doc)
    skip = _touched_by_continuity(session, months)
    wanted = set(village_ids) if village_ids is not None else None
    out: list[MonthRollup] = []
    carried: dict[str, bool] = {}  # node -> availability at the end of the last month used
    last_end: int | None = None
    for m0, m1 in months:
        if m0 in skip:
            last_end = None
            continue
        watch = _signature(iv.clip(observed, m0, m1))
        got = _stored(session, m0, m1, versions[m0], watch, evaluated_ms, settle_ms, wanted)
        if got is not None and not _consistent(
            session, got, m0, spans_by_village, wanted, carried if last_end == m0 else None
        ):
            got = None
        if got is None:
            got = _compute(session, m0, m1, evaluated_ms, versions[m0], airings, settle_ms)
            if got is None:  # cannot be rolled up (yet): raw
                last_end = None
                continue
            if wanted is not None:
                got.villages = {v: x for v, x in got.villages.items() if v in wanted}
        carried = {n: s[1] for x in got.villages.values() for n, s in x.states.items()}
        last_end = m1
        out.append(got)
    return out


def _stored(
    session: Session,
    m0: int,
    m1: int,
    versions: int,
    watch: str,
    evaluated_ms: int,
    settle_ms: int,
    wanted: set[int] | None,
) -> MonthRollup | None:
    row = session.get(IndicatorRollupMonth, m0)
    if (
        row is None
        or row.end_ms != m1
        or row.versions != versions
        or row.watch != watch
        or row.airings_end_ms + settle_ms > evaluated_ms
    ):
        return None
    # Whole result lists and comprehensions, not a generator step per row: a province
    # month is some 20,000 rows (most of them airings heard) and a year reads twelve.
    villages = {
        vid: VillageMonth(first, covered, sig)
        for vid, first, covered, sig in _all_rows(
            session,
            "SELECT village_id, first_ms, covered_ms, placements FROM indicator_rollup_village "
            "WHERE month_ms = :m",
            m0,
        )
        if wanted is None or vid in wanted
    }
    for vid, node, placed, up, seen, s0, s1 in _all_rows(
        session,
        "SELECT village_id, node_id, placed_ms, up_ms, seen_ms, start_available, "
        "end_available FROM indicator_rollup_node WHERE month_ms = :m "
        "ORDER BY village_id, node_id",
        m0,
    ):
        x = villages.get(vid)
        if x is not None:
            x.nodes.append((node, placed, up, seen))
            x.states[node] = (bool(s0), bool(s1))
    aimed = {
        (c, v): (a, p)
        for c, v, a, p in _all_rows(
            session,
            "SELECT commune_id, village_id, aimed, played FROM indicator_rollup_aimed "
            "WHERE month_ms = :m",
            m0,
        )
    }
    heard = {
        c: [row[1:] for row in rows]
        for c, rows in groupby(
            _all_rows(
                session,
                "SELECT commune_id, airing_id, slot_ms, duration_ms, language FROM "
                "indicator_rollup_heard WHERE month_ms = :m "
                "ORDER BY commune_id, slot_ms, airing_id",
                m0,
            ),
            key=itemgetter(0),
        )
    }
    return MonthRollup(m0, m1, villages, aimed, heard)


def _all_rows(session: Session, sql: str, m0: int) -> list[tuple]:
    """Every row of one month's query, as plain tuples."""
    return [row for batch in stream_batches(session, sql, {"m": m0}) for row in batch]


def _consistent(
    session: Session,
    got: MonthRollup,
    m0: int,
    spans_by_village: dict[int, list],
    wanted: set[int] | None,
    carried: dict[str, bool] | None,
) -> bool:
    """Placements unchanged, and every cluster starts the month as it ended the last."""
    m1 = got.end_ms
    for vid, spans in spans_by_village.items():
        if wanted is not None and vid not in wanted:
            continue
        x = got.villages.get(vid)
        sig = _placements(spans, m0, m1)
        if x is None:
            if any(s.start_ms < m1 and s.end_ms > m0 for s in spans):
                return False
        elif x.placements != sig:
            return False
    if any(vid not in spans_by_village for vid in got.villages):
        return False
    starts = {n: s[0] for x in got.villages.values() for n, s in x.states.items()}
    unknown = [n for n in starts if carried is None or n not in carried]
    truth = dict(carried or {})
    if unknown:
        flags = _initial_flags(session, m0, None if len(unknown) > 5_000 else unknown)
        truth.update({n: flags.get(n, False) for n in unknown})
    return all(truth.get(n, False) == s for n, s in starts.items())


def _compute(
    session: Session,
    m0: int,
    m1: int,
    evaluated_ms: int,
    versions: int,
    airings: Airings,
    settle_ms: int,
) -> MonthRollup | None:
    """One month for the whole province from the raw rows; stored if it can be."""
    ends = session.execute(
        text(
            "SELECT MAX(slot_ms + duration_ms) FROM airing WHERE slot_ms >= :a AND slot_ms < :b "
            "AND status <> 'cancelled'"
        ),
        {"a": m0, "b": m1},
    ).scalar()
    airings_end = ends if ends is not None else m0
    if airings_end + settle_ms > evaluated_ms:
        return None  # an airing of the month is not over yet: its outcome may change
    unattributed = session.execute(
        text(
            "SELECT 1 FROM airing_target t JOIN airing a ON a.id = t.airing_id WHERE "
            "a.slot_ms >= :a AND a.slot_ms < :b AND (t.village_id IS NULL OR "
            "t.commune_id IS NULL) LIMIT 1"
        ),
        {"a": m0, "b": m1},
    ).first()
    if unattributed is not None:
        return None  # attributed through the register at read time: not rolled up
    observed = watched(session, m0, m1)
    f = _Observation(
        available_intervals(session, m0, m1),
        observed,
        [(a, b) for a, b in iv.complement(observed, m0, m1)],
    )
    villages: dict[int, VillageMonth] = {}
    for vid, spans in history.nodes_by_village(session, m0, m1).items():
        measured = measure([(m0, m1)], spans, f)
        if measured.first is None:
            continue
        x = VillageMonth(
            measured.first,
            iv.total(iv.union(*measured.covered)),
            _placements(spans, m0, m1),
        )
        for node, (placed, up, seen, _bridged) in sorted(measured.nodes.items()):
            x.nodes.append((node, placed, up, seen))
            ivs = f.available.get(node, [])
            x.states[node] = (bool(ivs) and ivs[0][0] <= m0, bool(ivs) and ivs[-1][1] >= m1)
        villages[vid] = x
    aimed, heard = airings(session, m0, m1, evaluated_ms)
    got = MonthRollup(m0, m1, villages, aimed, heard)
    _store(session, got, versions, _signature(observed), airings_end, evaluated_ms)
    return got


def _store(
    session: Session,
    got: MonthRollup,
    versions: int,
    watch: str,
    airings_end: int,
    computed_ms: int,
) -> None:
    """Best effort, on a connection of its own, committed at once (the evaluation's own
    session may be read-only or hold a transaction the caller commits or not)."""
    bind = session.get_bind()
    if not isinstance(bind, Engine):
        return
    if bind.dialect.name == "sqlite" and bind.url.database in (None, "", ":memory:"):
        return
    m0 = got.start_ms
    try:
        with Session(bind) as s, s.begin():
            for model in ROLLUP_MODELS:
                col = model.start_ms if model is IndicatorRollupMonth else model.month_ms
                s.execute(delete(model).where(col == m0))
            s.execute(
                insert(IndicatorRollupMonth),
                [
                    dict(
                        start_ms=m0,
                        end_ms=got.end_ms,
                        versions=versions,
                        watch=watch,
                        airings_end_ms=airings_end,
                        computed_ms=computed_ms,
                    )
                ],
            )
            _insert(
                s,
                IndicatorRollupVillage,
                [
                    dict(
                        month_ms=m0,
                        village_id=v,
                        first_ms=x.first_ms,
                        covered_ms=x.covered_ms,
                        placements=x.placements,
                    )
                    for v, x in got.villages.items()
                ],
            )
            _insert(
                s,
                IndicatorRollupNode,
                [
                    dict(
                        month_ms=m0,
                        village_id=v,
                        node_id=node,
                        placed_ms=placed,
                        up_ms=up,
                        seen_ms=seen,
                        start_available=x.states[node][0],
                        end_available=x.states[node][1],
                    )
                    for v, x in got.villages.items()
                    for node, placed, up, seen in x.nodes
                ],
            )
            _insert(
                s,
                IndicatorRollupAimed,
                [
                    dict(month_ms=m0, commune_id=c, village_id=v, aimed=a, played=p)
                    for (c, v), (a, p) in got.aimed.items()
                ],
            )
            _insert(
                s,
                IndicatorRollupHeard,
                [
                    dict(
                        month_ms=m0,
                        commune_id=c,
                        airing_id=aid,
                        slot_ms=slot,
                        duration_ms=duration,
                        language=language,
                    )
                    for c, rows in got.heard.items()
                    for aid, slot, duration, language in rows
                ],
            )
    except Exception:  # noqa: BLE001 - a cache: busy or raced, the next evaluation stores it
        return


def _insert(s: Session, model, rows: list[dict]) -> None:
    for i in range(0, len(rows), 20_000):
        s.execute(insert(model), rows[i : i + 20_000])


def clear(session: Session) -> None:
    """Delete every roll-up (they are recomputed on demand)."""
    for model in ROLLUP_MODELS:
        session.execute(delete(model))
