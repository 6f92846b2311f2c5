"""A specialize run's progress bars as lines, for front ends that show text rather than rich's
bars (the language server's $/progress, the TUI's progress view, a log that is not a terminal)."""

from __future__ import annotations

import time
from typing import Callable


class StageBars:
    """A specialize run's `progress` (SpecializeRun.progress): the part of rich's Progress the stages call
    (`add_task`, then `update` with advance, completed, total and info). Each change goes to
    `report(bar, line)`, e.g. (2, "rollouts 3/20 (accepted 1/3, 4.0 tok/s)"), at most once per
    percent of its bar: a training run advances thousands of times; once part of a bar is done,
    the line ends with the time left at the pace so far ("12:30 left"). Called in the run's
    thread; `clock` gives seconds."""

    def __init__(self, report: Callable[[int, str], None],
                 clock: Callable[[], float] = time.monotonic):
        self.report = report
        self.clock = clock
        self.bars: list[dict] = []

    def add_task(self, description: str, total: float | None, info: str = "") -> int:
        self.bars.append({"description": description, "total": total, "done": 0.0, "info": info,
                          "shown": None, "started": self.clock()})
        self._report(len(self.bars) - 1)
        return len(self.bars) - 1

    def update(self, task: int, advance: float | None = None, completed: float | None = None,
               total: float | None = None, info: str | None = None, **_) -> None:
        bar = self.bars[task]
        if total is not None:
            bar["total"] = total
        if completed is not None:
            bar["done"] = completed
        bar["done"] += advance or 0
        if info is not None:
            bar["info"] = info
        self._report(task)

    def _report(self, task: int) -> None:
        bar = self.bars[task]
        total = bar["total"] or 0
        percent = int(100 * bar["done"] / total) if total else None
        if (percent, total) != bar["shown"]:
            bar["shown"] = (percent, total)
            self.report(task, _bar_line(bar, self.clock() - bar["started"]))


def _bar_line(bar: dict, elapsed: float) -> str:
    total = "?" if bar["total"] is None else f"{bar['total']:g}"  # parsing: unknown at first
    info = f" ({bar['info']})" if bar["info"] else ""
    left = ""
    if bar["total"] and 0 < bar["done"] < bar["total"]:
        seconds = round(elapsed / bar["done"] * (bar["total"] - bar["done"]))
        left = f", {seconds // 60}:{seconds % 60:02d} left"
    return f"{bar['description']} {bar['done']:g}/{total}{info}{left}"
