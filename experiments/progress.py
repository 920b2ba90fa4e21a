"""Live progress of long work: the engine start, each load point's phase, the sweep position, ETAs.

The runner reports events; the reporter derives everything else from a clock:

    progress = make_progress()                       # SERVELAB_PROGRESS decides, else the terminal
    progress.sweep(job_index, job_count)             # 0-based Hydra job number (optional)
    progress.job("vllm/awq", points=5, warmup_s=5, duration_s=60, cooldown_s=0)
    progress.engine_starting("vllm", timeout_s=600)  # ... engine_ready(ready_s) | engine_failed(why)
    progress.point_started(0, 5, "poisson 4")        # phase warmup -> measure -> cooldown from elapsed time
    progress.point_finished("ok 240/240, TTFT p50 41.2 ms")
    progress.close()                                 # or `with make_progress() as progress:`

The phases and ETAs come from the progress model (experiments.eta: a load point's phase from its
planned seconds, the job and sweep ETAs); this module only shows them. Indices passed in are
0-based (as hydra.job.num, PointPlan.index and cfg.repetition are); they are shown 1-based. The
job's position in a Hydra sweep is experiments.sweeps.plan.sweep_position.

Modes: `SERVELAB_PROGRESS=auto|rich|plain|off` (default auto; a mode passed to make_progress
other than "auto" wins over the variable):
  rich   a rich.progress display on stderr (position and ETAs, the engine start's and the load
         point's bars, the phase strip, the last point's summary), redrawn 4x/s; log lines keep
         appearing above it (while it is shown, logging handlers that write to the terminal are
         pointed at rich's proxy of that stream, and sys.stdout/sys.stderr are redirected by the
         display; all restored by close()). Transient: it disappears on close and leaves only the
         log lines, in the lab's own log format (the handlers are kept, not swapped for rich's).
  plain  lines through the `servelab` logger: one at each event and phase change, and at most
         one every `interval_s` (10 s) during the engine start and long phases, e.g.
         `progress: job 2/4 vllm/awq point 3/5 poisson 4 (rep 1/2) measure 12/30 s, ETA job 1m40s sweep 6m10s`
  off    NullProgress: tracks (eta() works) and shows nothing.
  auto   rich when the stream is a terminal (and TERM is not "dumb"), plain otherwise (CI, pipes).

Errors: no method ever raises into the caller (a broken terminal must not fail a run); the first
error is logged at debug level and the reporter goes quiet.

Side effects: rich mode writes to stderr, patches logging handler streams and sys.stdout/stderr
while shown, and runs a daemon thread that redraws; plain mode logs from a daemon thread that
notices phase changes. Both threads end at close().
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from experiments.eta import (
    Eta,
    Phase,
    State,
    Tracker,
    eta_at,
    eta_text,
    fmt_duration,
    phase_at,
    phase_text,
    point_position_text,
    position_text,
    seconds_text,
)
from experiments.sweeps.plan import SweepPosition, hydra_sweep_position, sweep_position

log = logging.getLogger("servelab")

ENV_VAR = "SERVELAB_PROGRESS"
MODES = ("auto", "rich", "plain", "off")
PLAIN_INTERVAL_S = 10.0
# The rich display's rows, top to bottom: position and ETAs, the engine start, the load point, its
# phase strip, the last point's summary (each a rich.progress task, hidden while it has nothing).
ROWS = ("head", "engine", "point", "phases", "last")
BAR_WIDTH = 30


# -- reporters -----------------------------------------------------------------------------------
def _never_raises(method: Callable[..., Any]) -> Callable[..., Any]:
    """Progress is a side show: an error in it is logged once (debug) and silences the reporter."""

    @functools.wraps(method)
    def wrapper(self: Progress, *args: Any, **kwargs: Any) -> Any:
        if self._broken:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - a broken terminal or renderer must never fail a run
            self._broken = True
            log.debug("progress display disabled after an error: %s: %s", type(e).__name__, e)
            try:
                self._teardown()
            except Exception:  # noqa: BLE001 - already broken; nothing more to do
                pass
            return None

    return wrapper


class Progress:
    """The reporter API. This base class tracks and shows nothing (see NullProgress)."""

    mode = "off"

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, history: dict[str, float] | None = None
    ) -> None:
        self.tracker = Tracker(clock, history)
        self._broken = False
        self._closed = False
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        # Held while the state changes and what to show is decided, so the ticker thread cannot report
        # the same phase change as the caller's event; the output itself happens after it is released.
        self._event_lock = threading.RLock()

    # -- the events (all indices 0-based) --
    @_never_raises
    def sweep(self, job_index: int, job_count: int | None = None, *, sequential: bool = True) -> None:
        """Position in a Hydra sweep: job `job_index` (hydra.job.num) of `job_count` (None: unknown);
        `sequential`: the jobs run one after another (the sweep ETA is only given then)."""
        with self._event_lock:
            self.tracker.sweep(job_index, job_count, sequential)

    @_never_raises
    def job(self, label: str, points: int, *, warmup_s: float, duration_s: float, cooldown_s: float = 0.0,
            repetition: int = 0, repetitions: int | None = None) -> None:  # fmt: skip
        """The job's plan: `points` load points of warmup_s + duration_s + cooldown_s each."""
        self._report(
            lambda: self.tracker.job(
                label, points, warmup_s, duration_s, cooldown_s, repetition, repetitions
            ),
            f"{points} point(s) x {warmup_s + duration_s + cooldown_s:g} s planned",
        )

    @_never_raises
    def engine_starting(
        self, label: str, timeout_s: float | None, *, estimate_s: float | None = None
    ) -> None:
        """The engine was launched; it has `timeout_s` to become ready (`estimate_s`: expected, for the ETA)."""
        self._report(
            lambda: self.tracker.engine_starting(label, timeout_s, estimate_s),
            f"engine {label} starting" + (f" (ready timeout {timeout_s:g} s)" if timeout_s else ""),
        )

    @_never_raises
    def engine_ready(self, elapsed_s: float | None = None) -> None:
        """The engine answers its health check, `elapsed_s` after the launch (None: by this clock)."""
        self._report(
            lambda: self.tracker.engine_ready(elapsed_s), lambda took: f"engine ready after {took:.1f} s"
        )

    @_never_raises
    def engine_failed(self, reason: str) -> None:
        """The engine did not become ready (or died); the job ends."""
        self._report(
            lambda: self.tracker.engine_failed(reason),
            lambda took: f"engine failed after {seconds_text(took)} s: {reason}",
            level=logging.WARNING,
        )

    @_never_raises
    def point_started(self, index: int, count: int, label: str = "", *, repetition: int | None = None,
                      repetitions: int | None = None, warmup_s: float | None = None,
                      duration_s: float | None = None, cooldown_s: float | None = None) -> None:  # fmt: skip
        """Load point `index` of `count` starts now; durations default to the job's plan."""
        self._report(
            lambda: self.tracker.point_started(
                index, count, label, repetition, repetitions, warmup_s, duration_s, cooldown_s
            ),
            None,
        )

    @_never_raises
    def point_finished(self, summary: str | None = None) -> None:
        """The current point is done; `summary` (one line, optional) is shown with it."""
        self._report(
            lambda: self.tracker.point_finished(summary),
            lambda took: f"done in {seconds_text(took)} s" + (f": {summary}" if summary else ""),
            point=True,
        )

    @_never_raises
    def tick(self) -> None:
        """Notice phase changes / redraw. Called by the reporter's own thread; tests call it directly."""
        with self._event_lock:
            deliver = self._on_tick()
        if deliver is not None:
            deliver()

    def eta(self) -> Eta:
        return self.tracker.eta()

    def phase(self) -> Phase:
        return self.tracker.phase()

    def close(self) -> None:
        """Stop the thread and remove the display; idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        try:
            self._teardown()
        except Exception as e:  # noqa: BLE001 - closing must not fail a run either
            log.debug("progress close: %s", e)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what subclasses do --
    def _report(self, update: Callable[[], Any], text: str | Callable[[Any], str] | None, *,
                level: int = logging.INFO, point: bool = False) -> None:  # fmt: skip
        """Apply `update` to the state and show the event (`text`, or a function of update's result)."""
        with self._event_lock:
            result = update()
            deliver = self._event(text(result) if callable(text) else text, level, point)
        if deliver is not None:
            deliver()

    def _event(self, text: str | None, level: int, point: bool) -> Callable[[], None] | None:
        """Decide what to show for an event (`text`; None: the current phase; `point`: it is about the
        point); returns the output to perform once the event lock is released, or None."""
        return None

    def _on_tick(self) -> Callable[[], None] | None:
        return None

    def _teardown(self) -> None:
        self._stop.set()
        t = self._ticker
        if t is not None and t is not threading.current_thread():
            t.join(timeout=2.0)

    def _start_ticker(self, period_s: float) -> None:
        if self._ticker is not None or self._closed:
            return

        def loop() -> None:
            while not self._stop.wait(period_s):
                self.tick()  # guarded: an error silences the reporter, the thread then ends
                if self._broken:
                    return

        self._ticker = threading.Thread(target=loop, name="servelab-progress", daemon=True)
        self._ticker.start()


class NullProgress(Progress):
    """Tracks (eta() and phase() work) and shows nothing: tests, library use, SERVELAB_PROGRESS=off."""


class PlainProgress(Progress):
    """Log lines through `logger`: one per event and phase change, at most one per `interval_s` otherwise.

    `ticker=False` leaves noticing phase changes to explicit tick() calls (deterministic tests)."""

    mode = "plain"
    PERIODIC = ("engine", "warmup", "measure", "cooldown", "finishing")  # phases that repeat their line

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, history: dict[str, float] | None = None,
                 logger: logging.Logger | None = None, interval_s: float = PLAIN_INTERVAL_S, ticker: bool = True,
                 tick_s: float = 1.0) -> None:  # fmt: skip
        super().__init__(clock=clock, history=history)
        self.logger = logger or log
        self.interval_s = interval_s
        self._key: tuple[Any, ...] | None = None  # the phase the last line was about
        self._last_emit = -math.inf
        self._want_ticker = ticker
        self._tick_s = tick_s

    def _phase_key(self) -> tuple[Any, ...]:
        s, now = self.tracker.snapshot()
        return (s.point_index if s.point_running else None, phase_at(s, now).name)

    def _line_out(self, line: str, key: tuple[Any, ...], level: int) -> Callable[[], None]:
        self._key, self._last_emit = key, self.tracker.clock()
        return lambda: self.logger.log(level, "%s", line)

    def _event(self, text: str | None, level: int, point: bool) -> Callable[[], None] | None:
        if self._want_ticker:
            self._start_ticker(self._tick_s)
        return self._line_out(self.tracker.line(text, point=point), self._phase_key(), level)

    def _on_tick(self) -> Callable[[], None] | None:
        key = self._phase_key()
        due = self.tracker.clock() - self._last_emit >= self.interval_s
        if key != self._key or (due and key[1] in self.PERIODIC):
            return self._line_out(self.tracker.line(), key, logging.INFO)
        return None


class RichProgress(Progress):
    """A rich.progress display (stderr by default) that log lines scroll above. `ticker=False`: tick() redraws."""

    mode = "rich"

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, history: dict[str, float] | None = None,
                 console: Any = None, stream: IO[str] | None = None, refresh_per_second: float = 4.0,
                 ticker: bool = True) -> None:  # fmt: skip
        super().__init__(clock=clock, history=history)
        from rich.console import Console

        # The stream is fixed now: once the display redirects sys.stderr, "sys.stderr" would be its own proxy.
        self.console = console if console is not None else Console(file=stream or sys.stderr)
        self._period_s = 1.0 / refresh_per_second
        self._want_ticker = ticker
        self._live: Any = None  # the rich.progress display while shown (experiments.progress._display)
        self._tasks: dict[str, Any] = {}  # ROWS name -> its task id
        self._patched: list[tuple[logging.StreamHandler, Any]] = []

    def _event(self, text: str | None, level: int, point: bool) -> Callable[[], None] | None:
        return self._show

    def _on_tick(self) -> Callable[[], None] | None:
        return self._refresh

    def _show(self) -> None:
        if self._live is None and not self._closed:
            self._start_live()  # on the first event: a reporter nobody uses draws nothing
        self._refresh()

    def _refresh(self) -> None:
        live = self._live  # read once: close() may clear it meanwhile
        if live is not None:
            live.refresh()

    def _start_live(self) -> None:
        # rich.progress draws the display: one task per row (ROWS). auto_refresh off: our own thread
        # redraws, so an error while drawing is caught (a dying refresh thread of rich's own would
        # print a traceback on the broken terminal instead).
        bars = _display(self.console, self.tracker.clock, self._rows)
        self._tasks = {name: bars.add_task(name, visible=False, label=None, cell=None, right=None) for name in ROWS}
        terminal_streams = {id(sys.stderr), id(sys.stdout), id(sys.__stderr__), id(sys.__stdout__),
                            id(self.console.file)}  # fmt: skip
        self._live = bars
        bars.start()
        self._patch_log_handlers(terminal_streams)
        if self._want_ticker:
            self._start_ticker(self._period_s)

    def _patch_log_handlers(self, terminal_streams: set[int]) -> None:
        """Point StreamHandlers that write to the terminal at rich's proxy, so their lines print above
        the display instead of through it (Hydra's console handler holds the real sys.stderr object,
        so the display's own sys.stderr redirect does not reach it)."""
        from rich.file_proxy import FileProxy

        loggers: list[logging.Logger] = [logging.getLogger()]
        loggers += [
            lg for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)
        ]
        seen: set[int] = set()
        for lg in loggers:
            for h in list(lg.handlers):
                if id(h) in seen or type(h) is not logging.StreamHandler:  # FileHandler etc. keep their files
                    continue
                seen.add(id(h))
                stream = getattr(h, "stream", None)
                if (
                    stream is not None
                    and id(stream) in terminal_streams
                    and not isinstance(stream, FileProxy)
                ):
                    old = h.setStream(FileProxy(self.console, stream))
                    self._patched.append((h, old))

    def _teardown(self) -> None:
        super()._teardown()
        live, self._live = self._live, None
        try:
            for h, old in reversed(self._patched):
                proxy = h.setStream(old)
                if proxy is not None:
                    proxy.flush()  # a partial line (no newline yet) still sits in the proxy's buffer
        finally:
            self._patched.clear()
            if live is not None:
                live.stop()

    def _rows(self, bars: Any) -> Any:
        """The rows of the display, from the progress model now: each ROWS task is updated (a bar from
        its total and completed seconds, or a text cell) or hidden, then rich.progress lays them out."""
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        try:
            s, now = self.tracker.snapshot()
            p = phase_at(s, now)
            eta = eta_at(s, now, self.tracker.history)
            # name -> (label, middle: (total, completed) for a bar, else a renderable, right)
            rows: dict[str, tuple[str, Any, Any]] = {
                "head": ("servelab", Text(position_text(s) or "servelab", style="bold cyan"),
                         Text(eta_text(eta), style="bold")),
            }  # fmt: skip
            if s.engine == "starting":
                total = s.engine_timeout_s or 0.0
                bar = (total, min(p.elapsed_s, total)) if total else ProgressBar(total=None, completed=0, width=BAR_WIDTH)
                rows["engine"] = ("engine", bar, Text(phase_text(p).removeprefix("engine ")))
            elif s.engine == "ready" and s.engine_ready_s is not None:
                rows["engine"] = ("engine", Text("ready", style="green"), Text(f"after {s.engine_ready_s:.1f} s", style="dim"))
            elif s.engine == "failed":
                rows["engine"] = ("engine", Text("failed", style="bold red"), Text(s.engine_reason or ""))
            if s.point_index is not None:
                label = point_position_text(s)
                if s.point_running and p.total_s:
                    rows["point"] = ("point", (p.total_s, min(p.elapsed_s, p.total_s)), Text(f"{phase_text(p)}  {label}"))
                elif s.point_running:
                    rows["point"] = ("point", Text(phase_text(p)), Text(label))
                else:
                    rows["point"] = ("point", Text("done", style="green"), Text(label))
                rows["phases"] = ("", _phase_strip(s, p), Text(""))
            if s.last_summary:
                rows["last"] = ("last", Text(s.last_summary, style="dim"), Text(""))
            for name, task in self._tasks.items():
                row = rows.get(name)
                if row is None:
                    bars.update(task, visible=False)
                    continue
                label_, middle, right = row
                if isinstance(middle, tuple):
                    bars.update(task, total=middle[0], completed=middle[1], visible=True, label=Text(label_), cell=None,
                                right=right)  # fmt: skip
                else:
                    bars.update(task, visible=True, label=Text(label_), cell=middle, right=right)
            return bars.make_tasks_table(bars.tasks)
        except Exception as e:  # noqa: BLE001 - called from the drawing thread: never let it die loudly
            return Text(f"(progress unavailable: {type(e).__name__})", style="dim")


def _display(console: Any, clock: Callable[[], float], rows: Callable[[Any], Any]) -> Any:
    """A rich.progress display on `console` whose rows `rows(display)` lays out (RichProgress._rows):
    a label column, a bar column (a task's total and completed, or the task's own `cell` in place of
    the bar) and a text column. Not started; transient, it redirects stdout and stderr while shown."""
    from rich.progress import BarColumn, ProgressColumn
    from rich.progress import Progress as RichBars
    from rich.table import Column
    from rich.text import Text

    class Field(ProgressColumn):
        """A task's own renderable, from its fields."""

        def __init__(self, name: str, table_column: Column) -> None:
            super().__init__(table_column=table_column)
            self.name = name

        def render(self, task: Any) -> Any:
            value = task.fields.get(self.name)
            return value if value is not None else Text("")

    class BarOrCell(BarColumn):
        """The task's bar, or its `cell` where it has one (a state in words, the phase strip)."""

        def render(self, task: Any) -> Any:
            cell = task.fields.get("cell")
            return cell if cell is not None else super().render(task)

    class Display(RichBars):
        def get_renderables(self) -> Any:
            yield rows(self)

    return Display(Field("label", Column(no_wrap=True, style="bold")), BarOrCell(bar_width=BAR_WIDTH, table_column=Column(no_wrap=True)),
                   Field("right", Column(no_wrap=True)), console=console, get_time=clock, auto_refresh=False,
                   transient=True, redirect_stdout=True, redirect_stderr=True)  # fmt: skip


def _phase_strip(s: State, p: Phase) -> Any:
    """warmup > measure > cooldown with the current phase marked."""
    from rich.text import Text

    names = [
        n for n, length in zip(("warmup", "measure", "cooldown"), s.point_plan, strict=True) if length > 0
    ]
    order = {n: i for i, n in enumerate(names)}
    now_i = order.get(p.name, len(names) if (p.name == "finishing" or not s.point_running) else -1)
    t = Text()
    for i, n in enumerate(names):
        if i:
            t.append(" > ", style="dim")
        style = "green" if i < now_i else ("bold yellow" if i == now_i else "dim")
        t.append(n, style=style)
    return t


# -- choosing a reporter -----------------------------------------------------------------------------
def resolve_mode(mode: str = "auto", stream: IO[str] | None = None) -> str:
    """rich | plain | off: `mode` unless "auto", else $SERVELAB_PROGRESS unless "auto", else the stream."""
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
        if env not in MODES:
            log.warning("%s=%r is not one of %s; choosing automatically", ENV_VAR, env, "|".join(MODES))
            env = "auto"
        mode = env
    if mode != "auto":
        return mode
    stream = stream if stream is not None else sys.stderr
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed or not a real file
        tty = False
    return "rich" if tty and os.environ.get("TERM", "") != "dumb" else "plain"


def make_progress(
    mode: str = "auto",
    *,
    stream: IO[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    history: dict[str, float] | None = None,
    logger: logging.Logger | None = None,
    interval_s: float = PLAIN_INTERVAL_S,
    console: Any = None,
    ticker: bool = True,
) -> Progress:
    """The reporter for `mode` (see the module doc); `stream` is the terminal to draw on (stderr).

    Never raises: an unknown mode or an unusable rich falls back to plain lines. `ticker=False`
    starts no thread (tests drive tick() with a fake `clock`)."""
    try:
        chosen = resolve_mode(mode, stream)
    except ValueError as e:
        log.warning("%s; using plain progress lines", e)
        chosen = "plain"
    if chosen == "off":
        return NullProgress(clock=clock, history=history)
    if chosen == "rich":
        try:
            return RichProgress(clock=clock, history=history, console=console, stream=stream, ticker=ticker)
        except Exception as e:  # noqa: BLE001 - rich missing or the console unusable: plain still works
            log.debug("rich progress unavailable (%s); using plain lines", e)
    return PlainProgress(clock=clock, history=history, logger=logger, interval_s=interval_s, ticker=ticker)


__all__ = [
    "ENV_VAR", "Eta", "NullProgress", "Phase", "PlainProgress", "Progress", "RichProgress", "SweepPosition",
    "Tracker", "fmt_duration", "hydra_sweep_position", "make_progress", "resolve_mode", "sweep_position",
]  # fmt: skip
