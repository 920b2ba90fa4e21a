"""An engine lease: one launched server (or an external endpoint) that load points can be measured against.

The lease covers discover -> preflight -> plan -> start -> ready -> samplers -> teardown and
nothing about load. It is a context manager keyed by its launch key (``variant_id``, see
analysis.records.identity), so a sweep can hand one ready engine to several sets of points:

    lease = EngineLease(cfg, run_dir, work, supervisor)
    problems = lease.prepare()          # discover + preflight (+ the engine's parser on the plan); [] = launchable
    with lease:                         # start, wait until healthy, start the samplers
        measure_point(lease, ...)       # experiments.measure
    # samplers and engine stopped here, exit code and effective quant recorded

While a lease is open, :meth:`failure_reason` tells (cheaply, non-blocking) whether the engine
died; the load-point driver polls it so a crash mid-point stops the point within a second.

Side effects: starts and stops processes through the run's engines.process.Supervisor (the
engine and the telemetry samplers), runs discovery probes, polls the engine's health URL.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from analysis.records import identity
from analysis.records.run import EngineRecord
from engines import ADAPTERS
from engines.auth import ApiKeyError, api_key_problems, bearer_headers
from engines.base import EngineAdapter, HostFacts, LaunchPlan
from engines.process import (
    Child,
    EngineCrashed,
    EngineError,
    Supervisor,
    free_port,
    shielded_teardown,
    wait_http_ready,
    wait_ready,
)
from experiments import discover, placement, preflight
from experiments.telemetry import SamplerProcess
from loadgen.locust.auth import TokenError, token_from

log = logging.getLogger("servelab")


class Rejected(Exception):
    """Preflight (or workload assembly) refused the run; `problems` are one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class EngineLease:
    """A launched engine and its samplers for the duration of a `with` block."""

    def __init__(self, cfg: Any, run_dir: Path, work: Path, supervisor: Supervisor, progress: Any = None) -> None:
        from experiments.progress import NullProgress

        self.cfg = cfg
        self.progress = progress if progress is not None else NullProgress()
        self.run_dir = Path(run_dir)
        self.work = Path(work)
        self.supervisor = supervisor
        self.variant_id = identity.launch_key(cfg)
        self.adapter: EngineAdapter | None = None
        self.facts: HostFacts | None = None
        self.plan: LaunchPlan | None = None
        self.engine: EngineRecord | None = None
        self.engine_child: Child | None = None
        self.samplers: dict[str, SamplerProcess] = {}
        self.telemetry: dict[str, Any] | None = None
        self.engine_metrics: dict[str, Any] | None = None
        self.warnings: list[str] = []
        self.placement: placement.Placement | None = None  # planned by prepare()
        self.host_cpus: list[int] = []  # the cores the lab may use (its affinity at prepare)
        self.starts = 0  # how many times this lease launched its engine (a test checks it stays 1)
        self._prepared: list[str] | None = None

    # -- discover + preflight (one child: the engine's parser) -------------------------------
    def prepare(self) -> list[str]:
        """Discover the machine and run the pure preflight; returns the problems ([] = launchable)."""
        if self._prepared is not None:
            return self._prepared
        cfg = self.cfg
        cls = ADAPTERS.get(cfg.engine.name)
        self.adapter = cls(cfg.engine, cfg.model, cfg.quant, cfg.gpu, cfg.workload) if cls else None
        self.facts = (
            discover.host_facts(self.adapter, cfg.engine, cfg.gpu.count, cfg.model.path) if self.adapter else None
        )
        self.host_cpus = sorted(os.sched_getaffinity(0))
        self._prepared = preflight.check(cfg, self.adapter, self.facts)
        self._prepared += placement.placement_problems(cfg.placement, self.host_cpus, cfg.traffic.workers)
        self._prepared += api_key_problems(cfg.engine.api_key_env)  # stripped and checked, never echoed
        if cfg.traffic.worker_token_env:  # the master/worker token is there (its value never shown)
            try:
                token_from(cfg.traffic.worker_token_env)
            except TokenError as e:
                self._prepared.append(f"traffic.worker_token_env: {e}")
        if not self._prepared:  # last, as it costs a child process: the engine's own parser on the plan
            self._prepared += preflight.parser_problems(cfg, self.adapter, self.facts, self.supervisor)
        if not self._prepared:
            assert self.adapter is not None
            self.warnings = preflight.warnings(cfg, self.adapter)
            self.placement = placement.plan_placement(
                cfg.placement, self.host_cpus, engine=self.adapter.name, gpu_planned=cfg.gpu.count > 0,
                workers=cfg.traffic.workers, realtime_allowed=placement.realtime_permitted(),
            )  # fmt: skip
            self.warnings += list(self.placement.notes)
        return self._prepared

    def plan_is_external(self) -> bool:
        """Whether this lease benchmarks a server the lab does not start (engine=endpoint)."""
        return self.adapter is not None and self.adapter.name == "endpoint"

    # -- launch ------------------------------------------------------------------------------
    def __enter__(self) -> EngineLease:
        problems = self.prepare()
        if problems:
            raise Rejected(problems)
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        cfg, adapter, facts = self.cfg, self.adapter, self.facts
        assert adapter is not None and facts is not None
        port = cfg.engine.port or free_port(cfg.engine.host)
        plan = adapter.launch_plan(port, facts)
        if self.placement is not None:  # e.g. the CPU build's OMP thread binding; the user's engine.env wins
            plan = dataclasses.replace(plan, env={**adapter.placement_env(self.placement, facts), **dict(plan.env)})
        self.plan = plan
        self.engine = EngineRecord(
            name=adapter.name, dist=facts.engine_dist, version=facts.engine_version,
            checked_against=adapter.checked_against, python=facts.engine_python if adapter.dists else None,
            binaries=dict(facts.binaries), packages=dict(facts.engine_packages), plan=plan.to_dict(),
        )  # fmt: skip
        self.progress.engine_starting(adapter.name, plan.ready_timeout_s)
        try:
            ready_s = self._launch(adapter, facts, plan)
        except BaseException as e:
            self.progress.engine_failed(str(e) if isinstance(e, Exception) else "cancelled")
            raise
        self.progress.engine_ready(ready_s)
        self.engine.time_to_ready_s = ready_s
        log.info("engine ready after %.1f s", ready_s)
        self._start_samplers()

    def _launch(self, adapter: EngineAdapter, facts: HostFacts, plan: LaunchPlan) -> float:
        """Start the engine (or find the external server) and wait until it is healthy; seconds taken."""
        assert self.engine is not None
        if plan.external:
            log.info("benchmarking the running server at %s", plan.base_url)
            ready_s = wait_http_ready(plan.base_url + plan.health_path, plan.ready_timeout_s, auth_headers(plan))
        else:
            self.starts += 1
            # The supervisor heads the log with the exact command line.
            self.engine_child = self.supervisor.spawn(
                plan.engine, plan.argv, log_path=self.run_dir / "engine.log", env=plan.env, cwd=plan.cwd, critical=True,
                cpus=_cpus(self.placement, "engine_cpus"), stop_timeout_s=plan.stop_timeout_s, container=plan.container,
            )  # fmt: skip
            self.engine.pid = self.engine_child.pid
            if lab := _cpus(self.placement, "lab_cpus"):  # the lab itself keeps off the engine's cores
                os.sched_setaffinity(0, lab)
            log.info("waiting for %s %s at %s", adapter.name, facts.engine_version or "", plan.base_url)
            ready_s = wait_ready(self.engine_child, plan.base_url + plan.health_path, plan.ready_timeout_s)
        return ready_s

    def _start_samplers(self) -> None:
        cfg, plan = self.cfg, self.plan
        assert plan is not None
        kind = preflight.telemetry_kind(cfg) if self.engine_child is not None else None
        self.telemetry = {"sampler": kind, "interval_s": cfg.telemetry.interval_s}
        cpus = _cpus(self.placement, "telemetry_cpus")
        if kind:
            assert self.engine_child is not None
            self.samplers["telemetry"] = SamplerProcess(
                kind, self.engine_child.pid, self.work / "telemetry.jsonl", cfg.telemetry.interval_s,
                supervisor=self.supervisor, cpus=cpus,
            )  # fmt: skip
        if cfg.telemetry.scrape_engine_metrics and plan.metrics_path and not plan.api_key_env:
            url = plan.base_url + plan.metrics_path
            self.engine_metrics = {"url": url, "interval_s": cfg.telemetry.metrics_interval_s}
            self.samplers["engine_metrics"] = SamplerProcess(
                "metrics", 0, self.work / "engine_metrics.jsonl", cfg.telemetry.metrics_interval_s, url=url,
                supervisor=self.supervisor, cpus=cpus, max_bytes=cfg.telemetry.max_scrape_bytes,
            )  # fmt: skip
        for sp in self.samplers.values():
            sp.start()

    # -- while open ----------------------------------------------------------------------------
    def failure_reason(self) -> str | None:
        """Why the engine is gone, or None while it runs (cheap; polled by the load-point driver)."""
        c = self.engine_child
        if c is None:
            return None
        code = c.poll()
        return None if code is None else f"{c.name} exited with code {code} during the run (log: {c.log_path})"

    def crash_error(self) -> EngineCrashed:
        """The error a run fails with when the engine died mid-point (exit code + log tail)."""
        assert self.engine_child is not None
        return EngineCrashed.of(self.engine_child)

    def dead_samplers(self) -> list[str]:
        """Names of samplers that have exited while the lease is open."""
        return [name for name, c in self.samplers.items() if not c.alive()]

    def base_url(self) -> str:
        assert self.plan is not None
        return self.plan.base_url

    # -- teardown ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the samplers, then the engine; record its exit code and effective quant. Never raises.

        A Ctrl-C or SIGTERM meanwhile only shortens the grace periods (engines.process.shielded_teardown)."""
        with shielded_teardown(self.supervisor):
            self._close()
            if self.host_cpus:
                os.sched_setaffinity(0, self.host_cpus)  # back to where the lab started (sweeps run many)

    def _close(self) -> None:
        for sp in list(self.samplers.values()):
            try:
                sp.stop()
            except Exception as e:  # noqa: BLE001 - teardown goes on whatever one sampler does
                log.warning("stopping the %s sampler: %s", sp.kind, e)
        if self.engine_child is not None:
            code = _quiet_stop(self.engine_child)
            if self.engine is not None:
                self.engine.exit_code = code
                try:
                    assert self.adapter is not None
                    text = self.engine_child.log_text()
                    self.engine.effective_quant = self.adapter.effective_quant(text)
                    self.engine.effective_dtype = self.adapter.effective_dtype(text)
                except Exception as e:  # noqa: BLE001 - a log we cannot parse must not break teardown
                    log.debug("effective quant not parsed: %s", e)


def _quiet_stop(c: Child) -> int | None:
    try:
        return c.stop()
    except Exception as e:  # noqa: BLE001 - teardown goes on whatever one child does
        log.warning("stopping %s: %s", c.name, e)
        return c.poll()


def auth_headers(plan: LaunchPlan) -> dict[str, str]:
    """Authorization header from the variable named by plan.api_key_env (read now, never stored)."""
    if not plan.api_key_env:
        return {}
    try:
        return bearer_headers(plan.api_key_env)
    except ApiKeyError as e:  # its message names the variable, never the key
        raise EngineError(str(e)) from None


def _cpus(placement: Any, attr: str) -> list[int] | None:
    v = getattr(placement, attr, None) if placement is not None else None
    return list(v) if v else None
