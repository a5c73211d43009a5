"""Progress reports that suit where they are read: a live bar on a terminal, plain lines in a log.

tqdm redraws about ten times a second; written into a file or a pipe (a ``make demo`` log, a
Slurm job's stderr) every redraw is a line, about a million a day of training. So
:func:`progress_bar` picks by where stderr goes:

* ``bar``: tqdm, when stderr is a terminal;
* ``lines``: when it is not, one plain line (done/total, percent, rate, ETA and the postfix, e.g.
  the loss terms) at the start, whenever another 5% is done or 30 s have passed since the last
  line, and at the end;
* ``off``: nothing.

``FACEVERIFY_PROGRESS=bar|lines|off`` overrides the choice. Every caller passes ``enabled``
(its own ``progress`` option, or "am I the main process"); a disabled report prints nothing.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Iterable, Iterator, Literal, TextIO

from faceverify.errors import InvalidInputError

Mode = Literal["bar", "lines", "off"]
MODES: tuple[str, ...] = ("bar", "lines", "off")
LINE_SECONDS = 30.0  # a plain line at least this often...
LINE_FRACTION = 0.05  # ...and whenever another 5% is done


def progress_mode(stream: TextIO | None = None) -> Mode:
    """``FACEVERIFY_PROGRESS`` if set, else ``bar`` on a terminal and ``lines`` elsewhere."""
    chosen = os.environ.get("FACEVERIFY_PROGRESS", "").strip().lower()
    if chosen:
        if chosen not in MODES:
            raise InvalidInputError(f"FACEVERIFY_PROGRESS={chosen!r}: expected one of {', '.join(MODES)}")
        return chosen  # type: ignore[return-value]
    stream = stream if stream is not None else sys.stderr
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # a closed or replaced stream
        return "lines"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _amount(value: float, unit_scale: bool) -> str:
    if not unit_scale:
        return f"{int(value)}"
    for prefix in ("", "k", "M", "G", "T"):
        if abs(value) < 1000:
            return f"{value:.1f}{prefix}" if prefix else f"{value:.0f}"
        value /= 1000
    return f"{value:.1f}P"


class LineProgress:
    """tqdm's interface (iterate, ``update``, ``set_postfix``, ``close``, ``with``) printing plain lines."""

    def __init__(self, iterable: Iterable | None = None, total: int | float | None = None, initial: int = 0,
                 desc: str = "", unit: str = "it", unit_scale: bool = False, stream: TextIO | None = None,
                 clock=time.monotonic):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.n = initial
        self.desc = desc
        self.unit = unit
        self.unit_scale = unit_scale
        self.stream = stream
        self.clock = clock
        self.postfix = ""
        self._start = clock()
        self._start_n = initial
        self._last_time = self._start
        self._last_fraction_step = self._fraction_step()
        self._closed = False
        self._print()

    # -- tqdm's interface
    def __iter__(self) -> Iterator:
        assert self.iterable is not None, "LineProgress without an iterable cannot be iterated"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int | float = 1) -> None:
        self.n += n
        now = self.clock()
        step = self._fraction_step()
        if now - self._last_time >= LINE_SECONDS or step > self._last_fraction_step:
            self._print(now)

    def set_postfix(self, values: dict[str, Any] | None = None, refresh: bool = True, **more: Any) -> None:
        items = {**(values or {}), **more}
        self.postfix = " ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.n != self._last_printed_n:
            self._print(self.clock())

    # -- lines
    def _fraction_step(self) -> int:
        if not self.total:
            return 0
        return int(self.n / self.total / LINE_FRACTION + 1e-9)

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = now - self._start
        done = _amount(self.n, self.unit_scale)
        prefix = f"{self.desc}: " if self.desc else ""
        text = f"{done}/{_amount(self.total, self.unit_scale)} {self.unit} ({100 * self.n / self.total:.0f}%)" \
            if self.total else f"{done} {self.unit}"
        timing = ""
        if self.n > self._start_n and elapsed > 0:
            rate = (self.n - self._start_n) / elapsed
            speed = f"{rate:.3g}" if rate < 1000 else _amount(rate, True)
            timing = f", {speed} {self.unit}/s, elapsed {_duration(elapsed)}"
            if self.total and self.n < self.total:
                timing += f", ETA {_duration((self.total - self.n) / rate)}"
        return f"{prefix}{text}{timing}" + (f"; {self.postfix}" if self.postfix else "")

    def _print(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        stream = self.stream if self.stream is not None else sys.stderr
        print(self.line(now), file=stream, flush=True)
        self._last_time = now
        self._last_fraction_step = self._fraction_step()
        self._last_printed_n = self.n


class SilentProgress(LineProgress):
    """The same interface, printing nothing (``off``, or a disabled report)."""

    def _print(self, now: float | None = None) -> None:
        self._last_printed_n = self.n


def progress_bar(iterable: Iterable | None = None, *, total: int | float | None = None, initial: int = 0,
                 desc: str = "", unit: str = "it", unit_scale: bool = False, enabled: bool = True,
                 leave: bool = True, mode: Mode | None = None) -> Any:
    """A progress report over ``iterable`` (or updated by hand): tqdm, :class:`LineProgress` or
    :class:`SilentProgress`, by ``mode`` or :func:`progress_mode`."""
    chosen = "off" if not enabled else (mode or progress_mode())
    if chosen == "bar":
        from tqdm import tqdm

        return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale,
                    leave=leave, dynamic_ncols=True, smoothing=0.05)
    cls = LineProgress if chosen == "lines" else SilentProgress
    return cls(iterable, total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale)
