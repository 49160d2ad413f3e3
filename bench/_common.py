"""What the benchmarks share: a registry of many nodes written in bulk, sampling the CPU and
memory of child processes, and the results files.

Why a bulk registry: ``tests.factories.make_registry`` adds nodes one ORM object at a time
(fine for a test's dozen nodes, minutes for 100,000). Here each table is one executemany
with explicit keys, so 100,000 nodes with their communes, villages, memberships and
placements take seconds. Only for throwaway benchmark databases: the explicit keys do not
advance PostgreSQL sequences.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from loa.db import Database  # noqa: E402
from loa.text import fold  # noqa: E402

# ``LOA_BENCH_RESULTS`` sends the figures elsewhere: the smoke runs in the test suite must not
# overwrite the measured results that the README quotes.
RESULTS = Path(os.environ.get("LOA_BENCH_RESULTS") or REPO / "bench" / "results")
CHUNK = 5_000


def bulk_register(
    db: Database,
    node_ids: Sequence[str],
    *,
    heartbeat_s: int = 30,
    nodes_per_village: int = 5,
    villages_per_commune: int = 10,
    simulated: bool = True,
) -> dict[str, int]:
    """One province; communes of ``villages_per_commune`` villages of ``nodes_per_village``
    nodes each (a commune of 10 villages with 5 clusters each is typical). Returns counts."""
    from sqlalchemy import insert

    from registry.models import (
        Commune,
        Node,
        NodePlacement,
        Province,
        Village,
        VillageMembership,
    )

    n_villages = max(1, math.ceil(len(node_ids) / nodes_per_village))
    n_communes = max(1, math.ceil(n_villages / villages_per_commune))
    communes = [
        {
            "id": c + 1,
            "code": f"bench-c{c + 1}",
            "province_id": 1,
            "name": f"Xã Thử Nghiệm {c + 1}",
            "name_folded": fold(f"Xã Thử Nghiệm {c + 1}"),
            "created_ms": 0,
        }
        for c in range(n_communes)
    ]
    villages = [
        {
            "id": v + 1,
            "code": f"bench-v{v + 1}",
            "name": f"Thôn {v + 1}",
            "name_folded": fold(f"Thôn {v + 1}"),
            "commune_id": v // villages_per_commune + 1,
            "created_ms": 0,
        }
        for v in range(n_villages)
    ]
    memberships = [
        {
            "village_id": v["id"],
            "commune_id": v["commune_id"],
            "valid_from_ms": 0,
            "valid_to_ms": None,
        }
        for v in villages
    ]
    nodes = [
        {
            "id": node_id,
            "village_id": i // nodes_per_village + 1,
            "heartbeat_s": heartbeat_s,
            "simulated": simulated,
            "registered_ms": 0,
        }
        for i, node_id in enumerate(node_ids)
    ]
    placements = [
        {"node_id": n["id"], "village_id": n["village_id"], "valid_from_ms": 0, "valid_to_ms": None}
        for n in nodes
    ]
    with db.session() as s:
        s.execute(insert(Province), [{"id": 1, "code": "bench", "name": "Tỉnh Thử Nghiệm"}])
        for model, rows in (
            (Commune, communes),
            (Village, villages),
            (VillageMembership, memberships),
            (Node, nodes),
            (NodePlacement, placements),
        ):
            for i in range(0, len(rows), CHUNK):
                s.execute(insert(model), rows[i : i + CHUNK])
    return {"nodes": len(nodes), "villages": n_villages, "communes": n_communes}


# --------------------------------------------------------------------------- processes


@dataclass
class _Series:
    procs: list[psutil.Process]
    samples: list[tuple[str, float, float]] = field(default_factory=list)  # phase, cpu%, MB


class ProcessSampler:
    """CPU % and RSS of groups of processes, sampled every ``interval_s`` in a thread.

    A group's sample is the sum over its processes (e.g. every simulator shard). Samples
    are tagged with the current ``phase`` so one run yields figures per phase (start-up,
    steady hold...). The thread only reads /proc: it costs the measured processes nothing.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.phase = "start"
        self._groups: dict[str, _Series] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def watch(self, group: str, pids: Sequence[int]) -> None:
        procs = []
        for pid in pids:
            try:
                p = psutil.Process(pid)
                p.cpu_percent(None)  # first call primes the counter
                procs.append(p)
            except psutil.Error:
                continue
        with self._lock:
            series = self._groups.setdefault(group, _Series([]))
            series.procs.extend(procs)

    def start(self) -> ProcessSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                groups = list(self._groups.items())
            for _name, series in groups:
                cpu = rss = 0.0
                alive = 0
                for p in series.procs:
                    try:
                        cpu += p.cpu_percent(None)
                        rss += p.memory_info().rss / 2**20
                        alive += 1
                    except psutil.Error:
                        continue
                if alive:
                    series.samples.append((self.phase, cpu, rss))

    def summary(self, phase: str) -> dict[str, dict[str, float | int]]:
        """Per group, over the samples of ``phase``: CPU % mean and peak (100 = one core),
        RSS MB mean and peak."""
        out: dict[str, dict[str, float | int]] = {}
        with self._lock:
            groups = list(self._groups.items())
        for name, series in groups:
            rows = [(c, r) for ph, c, r in series.samples if ph == phase]
            if not rows:
                continue
            cpus, rsss = [c for c, _ in rows], [r for _, r in rows]
            out[name] = {
                "cpu_mean": round(sum(cpus) / len(cpus), 1),
                "cpu_peak": round(max(cpus), 1),
                "rss_mean_mb": round(sum(rsss) / len(rsss), 1),
                "rss_peak_mb": round(max(rsss), 1),
                "samples": len(rows),
            }
        return out


def machine() -> dict[str, Any]:
    """What else was going on: the figures of a shared 2-core machine depend on it."""
    return {
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_result(name: str, data: dict[str, Any], *, merge: bool = False) -> Path:
    """``bench/results/<name>.json``; ``merge`` keeps the top-level keys of parts that were
    not run this time (a benchmark whose parts run separately)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    if merge and path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
        data = {**old, **data}
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path
