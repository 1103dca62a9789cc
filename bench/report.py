"""The printed report: one table for the contenders, one line per other section, the targets.

Targets are printed as met or missed, never asserted: timings on a shared
two-core machine vary from run to run, and a benchmark that fails on noise
teaches people to ignore it.
"""

from __future__ import annotations

from typing import Any

from bench.env import CONTENDERS, FLOORS, LABELS

__all__ = ["render"]


def _cell(value: Any, floor: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"
    if isinstance(floor, int | float) and floor:
        text += f" ({value / floor:.2f}x)"
    return text


def _the_floor(tp: dict[str, Any], lat: dict[str, Any]) -> str | None:
    """The faster floor by throughput (by p50 latency when only latency ran)."""
    if tp.get("floor"):
        return str(tp["floor"])
    timed = [f for f in FLOORS if isinstance(lat.get(f, {}).get("p50_ms"), int | float)]
    return min(timed, key=lambda f: lat[f]["p50_ms"]) if timed else None


def _table(tp: dict[str, Any], lat: dict[str, Any]) -> list[str]:
    columns = [
        ("records/s (median)", tp, "records_per_s"),
        ("best", tp, "best_records_per_s"),
        ("CPU s/100k", tp, "cpu_s_per_100k"),
        ("peak RSS MB", tp, "peak_rss_mb"),
        ("p50 e2e ms", lat, "p50_ms"),
        ("p99 e2e ms", lat, "p99_ms"),
        ("p99 read ms", lat, "read_p99_ms"),
        ("longest pause ms", lat, "longest_pause_ms"),
    ]
    floor_name = _the_floor(tp, lat) or ""
    rows = [["contender", *(c[0] for c in columns)]]
    notes = []
    for name in CONTENDERS:
        if name not in tp and name not in lat:
            continue
        label = LABELS[name] + (" *" if name == floor_name else "")
        row = [label]
        for _, section, key in columns:
            floor = section.get(floor_name, {}).get(key)
            row.append(_cell(section.get(name, {}).get(key), floor))
        rows.append(row)
        error = tp.get(name, {}).get("error") or lat.get(name, {}).get("error")
        if error:
            notes.append(f"  {LABELS[name]}: {error}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    return lines + notes


def _ratios(tp: dict[str, Any]) -> list[str]:
    pairs = [
        ("floor (confluent) / floor (aiokafka)", "confluent_vs_aiokafka"),
        ("at_least_once / floor", "at_least_once_vs_floor"),
        ("exactly_once / floor", "exactly_once_vs_floor"),
        ("exactly_once / at_least_once", "exactly_once_vs_at_least_once"),
        ("at_least_once / naive", "at_least_once_vs_naive"),
    ]
    best = tp.get("best", {})

    def shown(label: str, key: str) -> str:
        also = f" (best runs: {best[key]})" if best.get(key) is not None else ""
        return f"{label} = {tp[key]}{also}"

    lines = [shown(label, key) for label, key in pairs if tp.get(key) is not None]
    floor = tp.get("floor")
    head = [f"the floor (*) = {LABELS[floor]}, the faster raw loop (by median)"] if floor else []
    return head + lines if lines else head


def _targets(results: dict[str, Any]) -> list[tuple[str, Any, bool | None]]:
    tp, lat = results.get("throughput", {}), results.get("latency", {})
    swap, large, mem = results.get("swap", {}), results.get("large", {}), results.get("memory", {})

    def check(value: Any, ok: bool) -> tuple[Any, bool | None]:
        return (value, ok) if isinstance(value, int | float) else ("-", None)

    def at_most(value: Any, limit: float) -> tuple[Any, bool | None]:
        return check(value, isinstance(value, int | float) and value <= limit)

    def at_least(value: Any, limit: float) -> tuple[Any, bool | None]:
        return check(value, isinstance(value, int | float) and value >= limit)

    memory_ratio = mem.get("ratio")
    alo, eos = lat.get("at_least_once", {}), lat.get("exactly_once", {})
    rate = f"{lat.get('rate', 2000):,.0f}/s"
    return [
        ("at_least_once >= 1.2x floor (median)", *at_least(tp.get("at_least_once_vs_floor"), 1.2)),
        (
            "exactly_once >= 0.8x at_least_once",
            *at_least(tp.get("exactly_once_vs_at_least_once"), 0.8),
        ),
        ("at_least_once >= 5x naive", *at_least(tp.get("at_least_once_vs_naive"), 5)),
        (f"at_least_once p99 e2e <= 20 ms at {rate}", *at_most(alo.get("p99_ms"), 20)),
        ("at_least_once longest pause <= 50 ms", *at_most(alo.get("longest_pause_ms"), 50)),
        (f"exactly_once p50 e2e <= 60 ms at {rate}", *at_most(eos.get("p50_ms"), 60)),
        (f"exactly_once p99 e2e <= 150 ms at {rate}", *at_most(eos.get("p99_ms"), 150)),
        ("swap p99 <= 100 ms", *at_most(swap.get("swap_p99_ms"), 100)),
        ("swap gaps <= 2x normal", *at_most(swap.get("largest_gap_vs_normal"), 2)),
        ("large-model gap <= 2x normal", *at_most(large.get("largest_gap_vs_normal"), 2)),
        ("RSS after many swaps <= 1.10x", *at_most(memory_ratio, 1.10)),
    ]


def render(results: dict[str, Any]) -> str:
    lines = [f"\nhotswap benchmark: {results['machine']}", f"command: {results['command']}"]
    tp, lat = results.get("throughput"), results.get("latency")
    if tp or lat:
        tp, lat = tp or {}, lat or {}
        lines.append(
            f"\n{tp.get('records', '-')} records preloaded, 4 partitions, median and best of "
            f"{tp.get('repeat', '-')} runs; latency at "
            f"{lat.get('rate', '-')} records/s for {lat.get('seconds', '-')} s; "
            "(x) = / the floor (*)"
        )
        lines += _table(tp, lat)
        lines += [line for line in _ratios(tp) if line]
    if swap := results.get("swap"):
        lines.append(
            f"\nswap: {swap['swaps_seen']}/{swap['versions']} versions at 1,000 records/s: "
            f"publish -> first scored p50 {swap['swap_p50_ms']} ms, p99 {swap['swap_p99_ms']} ms, "
            f"max {swap['swap_max_ms']} ms; batch gap normal {swap['normal_gap_ms']} ms "
            f"(without swaps: p99 {swap['steady_p99_gap_ms']}, max {swap['steady_max_gap_ms']}), "
            "largest during a swap "
            f"{swap['largest_gap_during_a_swap_ms']} ms ({swap['largest_gap_vs_normal']}x); "
            f"swaps with a gap > 2x normal: {swap['swaps_with_gap_over_2x_normal']}"
        )
    if large := results.get("large"):
        lines.append(
            f"large model: {large['artifact_mb']} MB by reference, load {large['load_ms']} ms, "
            f"publish -> first scored {large.get('publish_to_first_scored_ms')} ms; largest gap "
            f"while loading {large.get('largest_gap_while_loading_ms')} ms vs normal "
            f"{large['normal_gap_ms']} ms ({large.get('largest_gap_vs_normal')}x; before the "
            f"publish: p99 {large['steady_p99_gap_ms']}, max {large['steady_max_gap_ms']}); "
            f"in the 1 s after {large.get('largest_gap_in_1s_after_ms')} ms"
        )
    if mem := results.get("memory"):
        lines.append(
            f"memory: RSS {mem['rss_after_5_mb']} MB after 5 swaps, {mem['rss_after_many_mb']} MB "
            f"after {mem['swaps']} ({mem['ratio']}x); {mem['swaps_per_s']} swaps/s back to back"
        )
    lines.append("\ntargets (printed, never asserted):")
    for label, value, ok in _targets(results):
        verdict = {True: "met", False: "MISSED", None: "not measured"}[ok]
        lines.append(f"  {label:<42} {value!s:>8}  {verdict}")
    return "\n".join(lines)
