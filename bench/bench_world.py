"""How fast the world samples a 10,000-device fleet (fleet10k), against a trivial loop in the same run.

The fleet mode must produce 10,000 reports/s from one process, and each report needs one world sample,
so sampling has to be a small part of a report's budget. Printed (best round of several, since the
machine is shared): samples/s for the trivial loop (one
attribute read and one small object per device, the floor of any per-device Python loop), for the world
(bins and lights), with the sensor fault chains, and with the ground-truth log written to a temporary
file; and each as a ratio to the trivial loop.

Run: `.venv/bin/python bench/bench_world.py` (part of `make bench`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from simulator.scenario import builtin_scenario
from simulator.world import SensorError, TruthLog, World

ROUNDS = 8  # each device sampled this many times, 15 simulated minutes apart; the best round counts
STEP_S = 900.0


class _Trivial:
    __slots__ = ("t", "v")

    def __init__(self, t: float, v: float) -> None:
        self.t = t
        self.v = v


def trivial(n: int) -> float:
    """Samples/s of a loop that does the least a per-device sample can do."""
    state = [float(i) for i in range(n)]
    best = 0.0
    for r in range(ROUNDS):
        t0 = time.perf_counter()
        t = r * STEP_S
        for i in range(n):
            _Trivial(t + i * 0.09, state[i] * 0.5)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def world_rate(truth_dir: Path | None, sensors: bool) -> tuple[float, float]:
    """(samples/s, seconds to build the 10,000 models) for fleet10k."""
    sc = builtin_scenario("fleet10k")
    truth = TruthLog(truth_dir / "truth.jsonl") if truth_dir else None
    t_build = time.perf_counter()
    world = World(sc, truth)
    bins = [(world.bin(d.id), world.sensor(d.id, "dist")) for d in sc.devices if d.kind == "bin"]
    lights = [(world.light(d.id), world.sensor(d.id, "lux")) for d in sc.devices if d.kind == "light"]
    build = time.perf_counter() - t_build
    # warm the sites' sky grids, as a running fleet has them
    for site in sc.sites:
        world.sky(site.name).lux(sc.start)
    best = 0.0
    for r in range(1, ROUNDS + 1):
        t0 = time.perf_counter()
        base = sc.start + r * STEP_S
        for i, (model, dist) in enumerate(bins):
            t = base + i * 0.09
            b = model.sample(t)
            if sensors:
                try:
                    dist.read(b.dist_mm, t)
                except SensorError:
                    pass
        for i, (lamp, lux) in enumerate(lights):
            t = base + i * 0.36
            s = lamp.sample(t)
            if sensors:
                try:
                    lux.read(s.lux, t)
                except SensorError:
                    pass
        best = max(best, len(sc.devices) / (time.perf_counter() - t0))
    if truth is not None:
        truth.close()
    return best, build


def main() -> None:
    n = 10_000
    base = trivial(n)
    print(f"devices: {n}, rounds: {ROUNDS}")
    print(f"trivial loop:                {base:>12,.0f} samples/s  (baseline)")
    plain, build = world_rate(None, sensors=False)
    print(f"world (bins + lights):       {plain:>12,.0f} samples/s  {plain / base:6.3f} x baseline"
          f"  (building 10,000 models: {build:.2f} s)")
    chained, _ = world_rate(None, sensors=True)
    print(f"+ sensor fault chains:       {chained:>12,.0f} samples/s  {chained / base:6.3f} x baseline")
    with tempfile.TemporaryDirectory() as tmp:
        logged, _ = world_rate(Path(tmp), sensors=True)
    print(f"+ ground-truth log:          {logged:>12,.0f} samples/s  {logged / base:6.3f} x baseline")
    print(f"fleet budget: 10,000 reports/s needs 10,000 samples/s; with the truth log on, sampling takes "
          f"{10_000 / logged:.0%} of one core")


if __name__ == "__main__":
    main()
