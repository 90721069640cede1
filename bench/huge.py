"""Huge data, the article's subject: how fast large results come back and large items go out, per design.

    python -m bench.huge point '{"variant": "supervisor", "direction": "back", "size": 1048576, "count": 256}'

Each point (a design, a direction, a size) runs in a fresh process of its own: it imports the design, runs one
unrecorded tiny ``run()`` (imports and first spawn out of the way), then one ``run()`` with ``WORKERS`` workers:

- ``back``: each item is a size; the job returns that many bytes; ``on_result`` drops them (the article: large
  API responses processed in workers, their results saved by the main process).
- ``out``: each item is that many bytes, made by a generator as the design pulls it; the job returns its length.

The rate is the steady state: the bytes of the results between the first and the last ``on_result``, over the time
between them (start-up and the first transfer excluded: every design pays them once per run, not per byte). The
whole ``run()``'s wall time is kept too. The parent's peak is the kernel's high-water mark of the point process
(``VmHWM``) less its resident size just before the measured ``run()``: what the transfer itself cost it.

This machine's limits, measured by the driver in the same bench run: copying ``size`` bytes in memory, and
``size`` bytes through one pipe between two threads of one process (1 MiB writes): the rate of one stream. A
design with a pipe per worker (the supervisor, mpire) runs ``WORKERS`` such streams at once and can pass it
(measured: mpire 1,163 MB/s of 1 MiB items out against 770 for one pipe, on 6fe8fc4); one with a single shared
queue for all its workers (``multiprocessing.Pool``, ``ProcessPoolExecutor``) cannot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KiB, MiB = 1 << 10, 1 << 20
SIZES = (64 * KiB, 1 * MiB, 8 * MiB, 64 * MiB)
QUICK_SIZES = (1 * MiB,)
QUICK_VARIANTS = ("supervisor", "pebble_pool")  # --quick checks the machinery on two designs (its 2-minute goal)
DIRECTIONS = {"back": "results back to the main process", "out": "items out to the workers"}
WORKERS = 2
# Bytes per point: enough that the steady state lasts well over the start-up's noise (about a second at the
# supervisor's rate); at least MIN_COUNT items (the rate is read between the first and the last result), at most
# MAX_COUNT (64 KiB items are about the per-task cost, which the throughput sweep already measures).
TOTAL = 512 * MiB
QUICK_TOTAL = 32 * MiB
MIN_COUNT, MAX_COUNT = 8, 2048
# A point past this many seconds is stopped, with every process it started, and said to have no figure. Dask's
# slowest point (2,048 items of 64 KiB) took ~15 s when this was written.
POINT_LIMIT = 90.0
PIPE_WRITE = 1 * MiB


def count_for(size: int, quick: bool = False) -> int:
    return max(MIN_COUNT, min(MAX_COUNT, (QUICK_TOTAL if quick else TOTAL) // size))


# -- in the point's process ----------------------------------------------------------------------------------
def payload(size: int) -> bytes:
    """``size`` bytes of real memory. Not ``bytes(size)``: its pages all map the kernel's one zero page until
    written, so sending them skipped the cost of touching memory and flattered zero-copy transports (measured on
    an idle machine, issue 26: one pipe 2,270-2,300 MB/s with zero pages against 1,500-1,600 with real ones)."""
    return b"\x01" * size


def make_result(size: int) -> bytes:
    return payload(size)


def take_item(item: bytes) -> int:
    return len(item)


def _items(direction: str, size: int, count: int) -> Iterator[Any]:
    for _ in range(count):
        yield size if direction == "back" else payload(size)


def _point(spec: dict[str, Any]) -> dict[str, Any]:
    import psutil

    from experiments.lab.runner import peak_rss_mb  # the lab's VmHWM reading, as every other peak of the bench
    from variants import VARIANTS

    variant, direction, size, count = spec["variant"], spec["direction"], spec["size"], spec["count"]
    design = VARIANTS[variant]
    job = make_result if direction == "back" else take_item
    design.run(job, _items(direction, 1, 2), workers=WORKERS)  # imports and the first spawn, unrecorded
    times: list[float] = []

    def on_result(item: Any, result: Any) -> None:
        times.append(time.monotonic())

    base_mb = psutil.Process().memory_info().rss / 2**20
    t0 = time.monotonic()
    design.run(job, _items(direction, size, count), workers=WORKERS, on_result=on_result)
    wall = time.monotonic() - t0
    peak_mb = peak_rss_mb()
    steady = times[-1] - times[0] if len(times) > 1 else None
    return {"results": len(times), "wall": wall, "steady_s": steady,
            "mb_s": (len(times) - 1) * size / steady / 1e6 if steady else None,
            "peak_mb": peak_mb - base_mb, "base_mb": base_mb}


# -- in the driver (bench/run.py) ----------------------------------------------------------------------------
def memory_copy_rate(size: int, total: int = 256 * MiB) -> float:
    """MB/s of copying ``size`` bytes in memory (``bytearray(src)``), best of three rounds of ``total`` bytes."""
    src = payload(size)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(max(1, total // size)):
            bytearray(src)
        best = min(best, time.perf_counter() - t)
    return max(1, total // size) * size / best / 1e6


def one_pipe_rate(size: int, total: int = 256 * MiB) -> float:
    """MB/s of ``total`` bytes (whole messages of ``size``) through one pipe between two threads, writes of
    ``size`` up to 1 MiB: the best of three rounds, as the memory copy (a round shares the machine's cores)."""
    return max(_pipe_round(size, total) for _ in range(3))


def _pipe_round(size: int, total: int) -> float:
    r, w = os.pipe()
    chunk = payload(min(size, PIPE_WRITE))
    n = max(1, total // size) * size

    def reader() -> None:
        left = n
        while left:
            left -= len(os.read(r, min(left, PIPE_WRITE)))

    try:
        th = threading.Thread(target=reader)
        t = time.perf_counter()
        th.start()
        sent = 0
        while sent < n:
            sent += os.write(w, chunk[: min(len(chunk), n - sent)])
        th.join()
        return n / (time.perf_counter() - t) / 1e6
    finally:
        os.close(r)
        os.close(w)


def points(variants: list[str], quick: bool) -> list[dict[str, Any]]:
    """What ``sweep`` runs, in order (bench/run.py counts them for its progress bar)."""
    return [{"variant": v, "direction": d, "size": s, "count": count_for(s, quick)}
            for d in DIRECTIONS for s in (QUICK_SIZES if quick else SIZES) for v in variants
            if not quick or v in QUICK_VARIANTS]


def sweep(variants: list[str], quick: bool, progress: Any = None, python: str = sys.executable) -> list[dict[str, Any]]:
    out = []
    for size in QUICK_SIZES if quick else SIZES:
        out.append({"limit": "memory copy", "size": size, "mb_s": memory_copy_rate(size)})
        out.append({"limit": "one pipe", "size": size, "mb_s": one_pipe_rate(size)})
    for spec in points(variants, quick):
        out.append(spec | measure(spec, python))
        if progress is not None:
            progress(f"huge {spec['variant']} {spec['direction']} {spec['size'] // KiB} KiB")
    return out


def measure(spec: dict[str, Any], python: str = sys.executable, limit: float = POINT_LIMIT) -> dict[str, Any]:
    """One point in a fresh process, in a session and a TMPDIR of its own (what it leaves goes with it)."""
    from bench.throughput import _kill_session

    with tempfile.TemporaryDirectory(prefix="huge-") as tmp, subprocess.Popen(
            [python, "-m", "bench.huge", "point", json.dumps(spec)], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True, env={**os.environ, "TMPDIR": tmp}) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_session(proc)
            proc.communicate()  # the session is gone: its pipes are at EOF
            return {"status": "timeout", "error": f"past the {limit:g} s limit"}
        finally:
            _kill_session(proc)  # what the point started and left (none should be)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"status": "failed", "error": (stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return {"status": "returned", **json.loads(lines[-1])}


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "point":
        print(json.dumps(_point(json.loads(argv[1]))), flush=True)
        return 0
    print(__doc__.splitlines()[2].strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


# -- rendering (called by bench/report.py from results/raw/huge.json) ----------------------------------------
def _size_label(size: int) -> str:
    return f"{size // MiB} MiB" if size >= MiB else f"{size // KiB} KiB"


def chart(runs: list[dict[str, Any]], out: Path) -> str | None:
    from bench import report
    from variants import VARIANTS

    measured = [r for r in runs if r.get("mb_s") and "variant" in r]
    if not measured:
        return None
    plt = report.plt
    fig, axes = plt.subplots(2, len(DIRECTIONS), figsize=(12, 8.5), squeeze=False)
    limits = [r for r in runs if "limit" in r]
    sizes = sorted({r["size"] for r in measured})
    for col, (d, words) in enumerate(DIRECTIONS.items()):
        rate_ax, peak_ax = axes[0][col], axes[1][col]
        for v in [v for v in VARIANTS if any(r["variant"] == v and r["direction"] == d for r in measured)]:
            pts = sorted((r["size"], r["mb_s"], r["peak_mb"]) for r in measured if r["variant"] == v and r["direction"] == d)
            xs = [p[0] for p in pts]
            rate_ax.plot(xs, [p[1] for p in pts], marker="o", ms=4, label=v, color=report.color(v), **report.line(v))
            peak_ax.plot(xs, [p[2] for p in pts], marker="o", ms=4, label=v, color=report.color(v), **report.line(v))
        for name, style in (("one pipe", "--"), ("memory copy", ":")):
            pts = sorted((r["size"], r["mb_s"]) for r in limits if r["limit"] == name)
            if pts:
                rate_ax.plot(*zip(*pts, strict=True), ls=style, color="0.35", lw=1.2, label=f"this machine: {name}")
        peak_ax.plot(sizes, [s / MiB for s in sizes], ls="--", color="0.35", lw=1.2, label="one item's size")
        rate_ax.set_title(f"{words}: rate once running (MB/s)", fontsize=10)
        peak_ax.set_title(f"{words}: main process peak above its start (MiB)", fontsize=10)
        for ax in (rate_ax, peak_ax):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [_size_label(s) for s in sizes])
            ax.xaxis.set_minor_locator(report.ticker.NullLocator())
            ax.set_yscale("log")
            report.readable_log_axis(ax.yaxis)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xlabel(f"size of each {'result' if d == 'back' else 'item'} ({WORKERS} workers)")
    labels: dict[str, Any] = {}
    for ax in axes.flat:  # one legend under the panels, each design and guide once
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            labels.setdefault(lab, h)
    fig.legend(list(labels.values()), list(labels), loc="lower center", ncol=6, fontsize=8)
    fig.suptitle("Huge data: how fast do large results come back and large items go out, and what do they cost "
                 "the main process?", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    return report._save(fig, out / "huge.png")


def text(runs: list[dict[str, Any]], link_base: str = "results") -> str:
    measured = [r for r in runs if "variant" in r and "direction" in r]
    if not measured:
        return ""
    sizes = sorted({r["size"] for r in measured})
    lines = [f"Huge data ({WORKERS} workers; MB/s once running, and the main process's peak above its start): "
             f"[huge.png]({link_base}/huge.png).", ""]
    for d, words in DIRECTIONS.items():
        lines += [f"| {words} | " + " | ".join(_size_label(s) for s in sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for v in dict.fromkeys(r["variant"] for r in measured):
            cells = []
            for s in sizes:
                r = next((r for r in measured if r["variant"] == v and r["direction"] == d and r["size"] == s), None)
                cells.append("—" if r is None else f"{r['mb_s']:,.0f} (+{r['peak_mb']:.0f} MiB)" if r.get("mb_s")
                             else r.get("status", "no figure"))
            lines.append(f"| `{v}` | " + " | ".join(cells) + " |")
        for name in ("one pipe", "memory copy"):
            row = [next((f"{r['mb_s']:,.0f}" for r in runs if r.get("limit") == name and r["size"] == s), "—")
                   for s in sizes]
            lines.append(f"| this machine: {name} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()
