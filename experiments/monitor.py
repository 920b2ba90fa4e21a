"""Live Prometheus metrics: of a run while it goes (monitor.port=<port>), and of a deployment that
is already serving (``python -m experiments.monitor engine.base_url=... pricing=... gpu=...``).

During a run the exporter lives in the LAB process, never in the load generator's: a thread reads
what the generator already writes (``work/requests.<point>.jsonl``, flushed every 0.5 s, and
``loadgen_lag.<point>.jsonl``) and what the samplers write (``telemetry.jsonl``,
``engine_metrics.jsonl``) from where it left off, whole lines only, and feeds
analysis.live.PointLive / EngineLive; a scrape builds the series from that state. The generator's
hot loop does no extra work. Every series and its formula: analysis.catalog.SERIES
(docs/monitoring.md). Each run writes ``prometheus.yml`` next to its results (the lab, the
engine's /metrics, a node exporter on 127.0.0.1:9100 when one answers).

The passive monitor sends no load: it scrapes the engine's /metrics every
monitor.scrape_interval_s, exports rates, the engine's TTFT/TPOT histograms re-aggregated, $/1M
output tokens at the observed rate and the idle share, keeps going through engine restarts
(counter resets are counted as gaps) and through malformed or failed scrapes (counted).

Side effects: listens on monitor.host:monitor.port; reads files under the run's work folder;
writes prometheus.yml; the passive monitor polls the engine over HTTP.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from analysis.catalog import SERIES_PREFIX
from analysis.live import EngineLive, PointLive
from analysis.records.atomic import write_text_atomic
from engines import ADAPTERS
from loadgen.tail import JsonlTail

log = logging.getLogger("servelab")

RUN_LABELS = ("variant_id", "run_id", "point_id")
ENGINE_LABELS = ("variant_id", "run_id", "target")
NODE_EXPORTER = "127.0.0.1:9100"


class MonitorPortBusy(OSError):
    """monitor.port cannot be bound; the message is the one-line refusal."""


def serve(registry: CollectorRegistry, host: str, port: int) -> tuple[Any, threading.Thread]:
    """Start prometheus_client's HTTP server for `registry`; MonitorPortBusy (one line) when the
    port is taken or cannot be bound."""
    from prometheus_client import start_http_server

    try:
        return start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise MonitorPortBusy(f"monitor.port={port} cannot be served on {host} ({e.strerror or e}); "
                              "pick a free port, e.g. monitor.port=9400, or leave monitor.port unset") from None  # fmt: skip


def stop_server(server: Any) -> None:
    server.shutdown()
    server.server_close()


def port_problem(host: str, port: Any) -> str | None:
    """One line when monitor.port is out of range or something already listens there; None = usable."""
    if port is None:
        return None
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        return f"monitor.port must be 1..65535 (or unset: no live metrics), got {port!r}"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            busy = s.connect_ex(("127.0.0.1" if host in ("0.0.0.0", "", "*") else host, port)) == 0
        except (OSError, OverflowError, UnicodeError):
            busy = False
    return f"monitor.port={port} is already in use on {host}; pick another port" if busy else None


def engine_names(adapter_name: str | None) -> dict[str, str]:
    """concept -> /metrics name of one adapter (metric_names + monitor_names)."""
    a = ADAPTERS.get(adapter_name or "")
    return {**a.metric_names, **a.monitor_names} if a is not None else {}


def detect_engine(names: Iterable[str]) -> str | None:
    """Which adapter's /metrics names appear in a scrape (the most matches wins; None: none)."""
    seen = set(names)
    best, hits = None, 0
    for n, a in ADAPTERS.items():
        h = len(seen & {*a.metric_names.values(), *a.monitor_names.values()})
        if h > hits:
            best, hits = n, h
    return best


def _g(name: str, doc: str, labels: Iterable[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(SERIES_PREFIX + name, doc, labels=list(labels))


def engine_families(eng: EngineLive, labels: Mapping[str, str]) -> Iterator[Any]:
    """The engine's series (passive monitor, and during a run from the lab's own scrapes)."""
    keys, vals = list(labels), list(labels.values())
    for name, v in eng.gauges().items():
        if v is None or not math.isfinite(v):
            continue
        fam = _g(name, name.replace("_", " "), keys)
        fam.add_metric(vals, v)
        yield fam
    for name, v in (("engine_output_tokens", eng.tokens_total), ("engine_requests", eng.requests_total),
                    ("engine_counter_resets", eng.resets), ("engine_gap_seconds", eng.gap_seconds)):  # fmt: skip
        c = CounterMetricFamily(SERIES_PREFIX + name, name.replace("_", " "), labels=keys)
        c.add_metric(vals, float(v))
        yield c
    c = CounterMetricFamily(SERIES_PREFIX + "engine_scrapes", "scrapes of the engine's /metrics", labels=[*keys, "result"])
    c.add_metric([*vals, "ok"], float(eng.ok_scrapes))
    c.add_metric([*vals, "error"], float(eng.failed_scrapes))
    yield c
    for concept, series in (("ttft_seconds", "engine_ttft_seconds"), ("tpot_seconds", "engine_tpot_seconds")):
        h = eng.hist[concept]
        if h.bounds:
            fam = HistogramMetricFamily(SERIES_PREFIX + series, series.replace("_", " "), labels=keys)
            fam.add_metric(vals, h.cumulative(), sum_value=h.total)
            yield fam


# -- during a run --------------------------------------------------------------------------------
class NullMonitor:
    """monitor.port unset: every call does nothing."""

    def start(self) -> None: ...
    def engine_ready(self, plan: Any) -> None: ...
    def point_started(self, index: int, load_value: float) -> None: ...
    def point_finished(self, index: int, measure_window_s: float | None) -> None: ...
    def stop(self, linger_s: float = 0.0) -> None: ...


def for_run(cfg: Any, record: Any, run_dir: Path, work: Path) -> RunMonitor | NullMonitor:
    """The run's exporter when monitor.port is set, else a NullMonitor."""
    if getattr(cfg, "monitor", None) is None or cfg.monitor.port is None:
        return NullMonitor()
    return RunMonitor(cfg, run_id=record.run_id, variant_id=record.variant_id, run_dir=run_dir, work=work)


class RunMonitor(Collector):
    """The exporter of one run (a launch): started before the engine, stopped with the run."""

    def __init__(self, cfg: Any, *, run_id: str, variant_id: str, run_dir: Path, work: Path) -> None:
        from analysis.cost import PriceMissing, price_for

        self.cfg, self.run_id, self.variant_id = cfg, run_id, variant_id
        self.run_dir, self.work = Path(run_dir), Path(work)
        m = cfg.monitor
        self.host, self.port, self.window_s, self.interval_s = m.host, m.port, float(m.window_s), float(m.interval_s)
        try:
            price = price_for(cfg.pricing, cfg.gpu)
            self.usd_per_hour = price.usd_per_hour
            self.energy_usd_per_j = 0.0 if price.energy_included else price.pue * price.usd_per_kwh / 3.6e6
        except PriceMissing:  # preflight names the fix; the $ series are left out
            self.usd_per_hour, self.energy_usd_per_j = math.nan, 0.0
        self.variant_label = f"{cfg.engine.name}/{cfg.quant.name} {cfg.model.name} {cfg.gpu.name} x{cfg.gpu.count}"
        self.points: dict[int, PointLive] = {}
        self.tails: dict[int, tuple[JsonlTail, JsonlTail]] = {}
        self.active: int | None = None
        self.engine = EngineLive(engine_names(cfg.engine.name), usd_per_hour=self.usd_per_hour, window_s=30.0)
        self.engine_target = ""
        self._telemetry = JsonlTail(self.work / "telemetry.jsonl")
        self._engine_metrics = JsonlTail(self.work / "engine_metrics.jsonl")
        self._pending_scrape: tuple[int, list[Any]] | None = None
        self.lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.server: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle (called by experiments.runner) -------------------------------------------------
    def start(self) -> None:
        """Bind the port and start reading, before the engine starts; a port that cannot be served
        is refused in one line (experiments.lease.Rejected)."""
        from experiments.lease import Rejected

        try:
            self.server, _ = serve(self.registry, self.host, self.port)
        except MonitorPortBusy as e:
            raise Rejected([str(e)]) from None
        self._thread = threading.Thread(target=self._loop, name="servelab-monitor", daemon=True)
        self._thread.start()
        log.info("monitor: live metrics on http://%s:%d/metrics", self.host, self.port)

    def engine_ready(self, plan: Any) -> Path:
        """Write prometheus.yml next to the run's results (the lab, the engine, a node exporter)."""
        base_url, metrics_path = getattr(plan, "base_url", None), getattr(plan, "metrics_path", None)
        self.engine_target = base_url or ""
        return write_scrape_config(self.run_dir / "prometheus.yml", lab=f"{_reachable(self.host)}:{self.port}",
                                   engine_url=base_url, metrics_path=metrics_path,
                                   interval_s=float(self.cfg.monitor.scrape_interval_s), run_id=self.run_id)  # fmt: skip

    def point_started(self, index: int, load_value: float) -> None:
        """Point `index` (of this launch) is about to start at `load_value`: read its record files."""
        from analysis.records import identity
        from analysis.records.run import load_unit as unit_of

        t, w = self.cfg.traffic, self.cfg.workload
        point_id, load_unit = identity.point_id(t, w, load_value), unit_of(t.kind, w.kind)
        with self.lock:
            self.points[index] = PointLive(
                index=index, point_id=point_id, load_value=load_value, load_unit=load_unit, slo=self.cfg.slo,
                usd_per_hour=self.usd_per_hour, duration_s=float(self.cfg.traffic.duration_s), window_s=self.window_s,
                energy_usd_per_j=self.energy_usd_per_j,
            )  # fmt: skip
            self.tails[index] = (JsonlTail(self.work / f"requests.{index}.jsonl"), JsonlTail(self.work / f"loadgen_lag.{index}.jsonl"))
            self.active = index

    def point_finished(self, index: int, measure_window_s: float | None) -> None:
        """The point's generator has exited: read its last records, then fix its window to the summary's."""
        self._read()
        with self.lock:
            if (p := self.points.get(index)) is not None:
                p.finish(measure_window_s)
            if self.active == index:
                self.active = None

    def stop(self, linger_s: float = 0.0) -> None:
        """Stop reading and serving; `linger_s` first keeps serving the final state (a scraper's last look)."""
        if self.server is None:
            return
        try:
            if linger_s > 0:
                self._read()
                time.sleep(linger_s)
        finally:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=5)
            stop_server(self.server)
            self.server = None

    # -- reading ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        try:  # this thread yields to the lab's others (Linux: a thread's own nice value)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        while not self._stop.wait(self.interval_s):
            try:
                self._read()
            except Exception as e:  # noqa: BLE001 - the monitor must never take the run down
                log.debug("monitor: read failed: %s: %s", type(e).__name__, e)

    def _read(self) -> None:
        with self.lock:  # the reader thread and point_finished may both read; one at a time
            telemetry = self._telemetry.rows()
            scrapes = self._engine_metrics.rows()
            for i, (req, lag) in self.tails.items():
                p = self.points[i]
                if p.finished:
                    continue
                p.add_records(req.rows())
                p.add_lag(lag.rows())
                if i == self.active:
                    p.add_telemetry(telemetry)
            self._feed_engine(scrapes)

    def _feed_engine(self, rows: list[dict[str, Any]]) -> None:
        """engine_metrics.jsonl rows, one per sample, grouped by scrape time (t_ns); a scrape is fed
        once the next one has begun (the rows of one scrape may straddle two reads)."""
        for r in rows:
            t = r.get("t_ns")
            if t is None:
                continue
            if self._pending_scrape is not None and self._pending_scrape[0] != t:
                self._flush_scrape()
            if self._pending_scrape is None:
                self._pending_scrape = (int(t), [])
            if r.get("name") is None:  # a failed scrape
                self._pending_scrape[1].append(None)
            else:
                labels = r.get("labels")
                labels = json.loads(labels) if isinstance(labels, str) else (labels or {})
                self._pending_scrape[1].append((r["name"], labels, r.get("value")))

    def _flush_scrape(self) -> None:
        t, samples = self._pending_scrape  # type: ignore[misc]
        self._pending_scrape = None
        if any(s is None for s in samples):
            self.engine.failed()
        else:
            self.engine.add_scrape(t, samples)

    # -- exporting (a scrape of /metrics) ----------------------------------------------------------
    def collect(self) -> Iterator[Any]:
        with self.lock:
            yield from self._families(time.monotonic_ns())

    def _families(self, now_ns: int) -> Iterator[Any]:
        info = _g("run_info", "the run: experiment, variant, engine, SLO and price book (value 1)",
                  ["variant_id", "run_id", "experiment", "variant", "slo", "pricing"])  # fmt: skip
        c = self.cfg
        info.add_metric([self.variant_id, self.run_id, c.experiment_name, self.variant_label, c.slo.name, c.pricing.name], 1)
        yield info
        if math.isfinite(self.usd_per_hour):
            usd = _g("usd_per_hour", "the price of the hardware serving the run: G x P", ["variant_id", "run_id"])
            usd.add_metric([self.variant_id, self.run_id], self.usd_per_hour)
            yield usd
        base = [self.variant_id, self.run_id]
        from analysis.slo import thresholds

        slo = _g("slo_threshold_seconds", "the run's SLO limits", ["variant_id", "run_id", "metric", "percentile"])
        for t in thresholds(c.slo):
            slo.add_metric([*base, t.metric.removesuffix("_ms"), f"{t.percentile:g}"], t.limit_ms / 1e3)
        yield slo
        target = _g("slo_attainment_target_ratio", "slo.attainment_target", ["variant_id", "run_id"])
        target.add_metric(base, float(c.slo.attainment_target))
        yield target
        families: dict[str, Any] = {}

        def fam(kind: str, name: str, extra: tuple[str, ...] = ()) -> Any:
            if name not in families:
                cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}[kind]
                families[name] = cls(SERIES_PREFIX + name, name.replace("_", " "), labels=[*RUN_LABELS, *extra])
            return families[name]

        for p in self.points.values():
            lab = [*base, p.point_id]
            fam("gauge", "load_point_value", ("load_unit", "point_index")).add_metric(
                [*lab, p.load_unit, str(p.index)], p.load_value)
            ph = p.phase()
            for name in ("starting", "warmup", "measure", "cooldown", "done"):
                fam("gauge", "phase", ("phase",)).add_metric([*lab, name], float(ph == name))
            fam("gauge", "point_active").add_metric(lab, float(p.index == self.active))
            for (status, phase), n in sorted(p.requests.items()):
                fam("counter", "requests", ("status", "phase")).add_metric([*lab, status, phase], float(n))
            for series, counter in (("output_tokens", p.output_tokens), ("goodput_requests", p.goodput_requests),
                                    ("goodput_output_tokens", p.goodput_tokens)):  # fmt: skip
                for phase, n in sorted(counter.items()):
                    fam("counter", series, ("phase",)).add_metric([*lab, phase], float(n))
            for (metric, phase), h in sorted(p.hist.items()):
                fam("histogram", f"{metric}_seconds", ("phase",)).add_metric([*lab, phase], h.cumulative(), sum_value=h.total)
            for name, v in p.gauges(now_ns).items():
                if v is not None and math.isfinite(v):
                    fam("gauge", name).add_metric(lab, float(v))
        yield from families.values()
        if self.engine.ok_scrapes or self.engine.failed_scrapes:
            yield from engine_families(self.engine, {"variant_id": self.variant_id, "run_id": self.run_id,
                                                     "target": self.engine_target})  # fmt: skip


def _reachable(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "*", "::") else host


def _open(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        try:
            return s.connect_ex((host, int(port))) == 0
        except OSError:
            return False


def write_scrape_config(path: Path, *, lab: str, engine_url: str | None, metrics_path: str | None,
                        interval_s: float, run_id: str = "", node_exporter: str | None = NODE_EXPORTER) -> Path:  # fmt: skip
    """A Prometheus config that scrapes the lab's exporter, the engine's /metrics (when it has one)
    and a node exporter (when one answers at `node_exporter`). Returns the path written."""
    from urllib.parse import urlsplit

    import yaml

    every = f"{max(interval_s, 0.1):g}s"
    # the lab's series carry their own run_id (honor_labels keeps them as they are)
    jobs: list[dict[str, Any]] = [{"job_name": "servelab", "honor_labels": True, "static_configs": [{"targets": [lab]}]}]
    if engine_url and metrics_path:
        u = urlsplit(engine_url)
        jobs.append({"job_name": "engine", "metrics_path": metrics_path, "scheme": u.scheme or "http",
                     "static_configs": [{"targets": [u.netloc], "labels": {"run_id": run_id}}]})  # fmt: skip
    if node_exporter and _open(node_exporter):
        jobs.append({"job_name": "node", "static_configs": [{"targets": [node_exporter]}]})
    cfg = {"global": {"scrape_interval": every, "evaluation_interval": every}, "scrape_configs": jobs}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # atomic: a Prometheus (or a test) reading the file while it is written sees all of it or none
    write_text_atomic(path, "# written by servelab (experiments.monitor): prometheus --config.file=" + path.name + "\n"
                      + yaml.safe_dump(cfg, sort_keys=False))  # fmt: skip
    return path


# -- a deployment that is already serving --------------------------------------------------------
def parse_scrape(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus text exposition; ValueError (or another parse error) when malformed."""
    from prometheus_client.parser import text_string_to_metric_families

    return [(s.name, dict(s.labels), float(s.value)) for fam in text_string_to_metric_families(text) for s in fam.samples]


class PassiveMonitor(Collector):
    """Scrapes one engine's /metrics and exports what it costs now; no load is sent."""

    def __init__(self, url: str, *, engine: str | None, usd_per_hour: float, window_s: float, label: str) -> None:
        self.url, self.engine_name, self.label = url, engine, label
        self.usd_per_hour, self.window_s = usd_per_hour, window_s
        self.live = EngineLive(engine_names(engine), usd_per_hour=usd_per_hour, window_s=window_s)
        self.malformed = 0
        self.lock = threading.Lock()

    def scrape_once(self, timeout_s: float = 5.0) -> bool:
        """One scrape; False (counted, logged once per kind) when it failed or was malformed."""
        t_ns = time.monotonic_ns()
        try:
            with urllib.request.urlopen(self.url, timeout=timeout_s) as r:  # noqa: S310 - the user's engine URL
                text = r.read().decode("utf-8", errors="replace")
        except Exception as e:  # noqa: BLE001 - down, restarting, refused: a gap
            with self.lock:
                self.live.failed()
            log.debug("monitor: scrape of %s failed: %s", self.url, e)
            return False
        try:
            samples = parse_scrape(text)
        except Exception as e:  # noqa: BLE001 - any parse error is a malformed scrape, never a crash
            with self.lock:
                self.malformed += 1
                self.live.failed()
            log.warning("monitor: malformed scrape of %s (%s: %s); skipped", self.url, type(e).__name__, str(e)[:120])
            return False
        with self.lock:
            if self.engine_name is None and (found := detect_engine(n for n, _, _ in samples)) is not None:
                self.engine_name = found
                self.live.names = engine_names(found)
                log.info("monitor: %s looks like engine=%s", self.url, found)
            self.live.add_scrape(t_ns, samples)
        return True

    def collect(self) -> Iterator[Any]:
        with self.lock:
            labels = {"variant_id": "", "run_id": self.label, "target": self.url}
            usd = _g("usd_per_hour", "the price of the hardware serving the deployment: G x P", ["variant_id", "run_id"])
            usd.add_metric(["", self.label], self.usd_per_hour)
            yield usd
            bad = CounterMetricFamily(SERIES_PREFIX + "engine_malformed_scrapes", "scrapes that did not parse",
                                      labels=list(labels))  # fmt: skip
            bad.add_metric(list(labels.values()), float(self.malformed))
            yield bad
            yield from engine_families(self.live, labels)


def main(argv: list[str] | None = None) -> int:
    """python -m experiments.monitor engine.base_url=http://host:8000 [engine=vllm|sglang] pricing=... gpu=... gpu.count=N
    [monitor.port=9401] [monitor.scrape_interval_s=1] [monitor.window_s=30] [monitor.duration_s=...]"""
    from analysis.cost import PriceMissing, price_for
    from experiments.config import compose_run
    from experiments.schema import register_configs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    overrides = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in overrides):
        print(main.__doc__)
        return 0
    explicit_engine = any(a.startswith("engine=") for a in overrides)
    try:
        register_configs()
        cfg = compose_run(overrides)
    except Exception as e:  # noqa: BLE001 - a setting Hydra cannot compose: one line
        print(f"monitor: {type(e).__name__}: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    e, m = cfg.engine, cfg.monitor
    problems = []
    if not e.base_url:
        problems.append("engine.base_url is not set: give the deployment's URL, e.g. engine.base_url=http://127.0.0.1:8000")
    if not e.metrics_path:
        problems.append("engine.metrics_path is not set: the engine's Prometheus path, e.g. engine.metrics_path=/metrics")
    port = m.port if m.port is not None else 9401
    if (p := port_problem(m.host, port)) is not None:
        problems.append(p)
    try:
        price = price_for(cfg.pricing, cfg.gpu)
    except PriceMissing as ex:
        problems.append(str(ex))
    if problems:
        for p in problems:
            print(f"monitor: {p}", file=sys.stderr)
        return 2
    url = e.base_url.rstrip("/") + e.metrics_path
    mon = PassiveMonitor(url, engine=e.name if explicit_engine else None, usd_per_hour=price.usd_per_hour,
                         window_s=float(m.window_s), label=f"passive {cfg.gpu.name} x{cfg.gpu.count} {cfg.pricing.name}")  # fmt: skip
    registry = CollectorRegistry(auto_describe=False)
    registry.register(mon)
    try:
        server, _ = serve(registry, m.host, port)
    except MonitorPortBusy as ex:
        print(f"monitor: {ex}", file=sys.stderr)
        return 2
    log.info("monitor: scraping %s every %gs; live metrics on http://%s:%d/metrics ($%.4f/h)", url,
             m.scrape_interval_s, m.host, port, price.usd_per_hour)  # fmt: skip
    deadline = time.monotonic() + m.duration_s if m.duration_s else None
    try:
        while deadline is None or time.monotonic() < deadline:
            t = time.monotonic()
            mon.scrape_once(timeout_s=max(float(m.scrape_interval_s), 1.0))
            time.sleep(max(float(m.scrape_interval_s) - (time.monotonic() - t), 0.0))
    except KeyboardInterrupt:
        log.info("monitor: stopped")
    finally:
        stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
