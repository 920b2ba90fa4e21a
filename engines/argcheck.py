"""Launch plans checked by the engine's own argument parser, in a child process of the engine's interpreter.

`parse_with_engine(python, engine, argvs, fields)` hands any number of plans' arguments to one
run of engines/parse_argv.py under `python` (the engine's venv), which parses each with the
parser the engine's server uses and answers what it made of them; the lab never imports an engine.
One child per call: importing vLLM costs tens of seconds on 2 cores, parsing a plan a millisecond.

`plan_rejection(adapter, plan, facts)` is what the preflight asks before a launch: None when the
engine's parser accepts the plan (or no parser could be run: then the engine start says; or
SERVELAB_SKIP_ENGINE_PARSE=1), else one line naming the rejected option and where to fix it.

Side effects: starts one short-lived child process per call (no server, no network), through the
supervisor (engines.process: own process group, PDEATHSIG, the guardian, terminate -> kill), with
its request and output in a private temporary folder removed afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.base import EngineAdapter, HostFacts, LaunchPlan
from engines.parse_argv import RESULT_MARK  # it writes this before its answer
from engines.process import Supervisor, read_log

log = logging.getLogger("servelab")
SCRIPT = Path(__file__).with_name("parse_argv.py")
# The engines whose parser runs in their interpreter, and the `-m` module their plans start.
PARSED_ENGINES = {"vllm": "vllm.entrypoints.openai.api_server", "sglang": "sglang.launch_server"}
# SERVELAB_SKIP_ENGINE_PARSE=1 skips the preflight's parse (it costs 20-45 s per launch on 2 cores)
SKIP_ENV = "SERVELAB_SKIP_ENGINE_PARSE"
DEFAULT_TIMEOUT_S = 300.0  # importing vLLM took 20-45 s on a busy 2-core machine


class ParserUnavailable(Exception):
    """The engine's parser could not be run (no interpreter, import failed, timed out)."""


@dataclass(frozen=True)
class Parsed:
    """What the engine's parser made of one plan: accepted (with the requested values) or its error."""

    ok: bool
    error: str | None
    values: dict[str, Any]


@dataclass(frozen=True)
class ParseAnswer:
    engine: str
    version: str  # the engine distribution's version in that interpreter
    parser: str  # the parser's qualified name, e.g. vllm.entrypoints.launchers.cli_args.make_arg_parser
    results: list[Parsed]


def engine_args(plan: LaunchPlan) -> list[str]:
    """The arguments of a plan after `<python> -m <module>` (what the engine's parser sees)."""
    argv = list(plan.argv)
    module = PARSED_ENGINES.get(plan.engine)
    if module is None or argv[1:3] != ["-m", module]:
        raise ValueError(f"not a {plan.engine} plan of `python -m {module}`: {argv[:3]}")
    return argv[3:]


def parse_with_engine(python: str, engine: str, argvs: Sequence[Sequence[str]], fields: Sequence[str] = (),
                      timeout_s: float = DEFAULT_TIMEOUT_S, env: dict[str, str] | None = None,
                      supervisor: Supervisor | None = None) -> ParseAnswer:  # fmt: skip
    """Parse every argv in `argvs` with `engine`'s own parser, in ONE child process of `python`
    (with `env` added to the lab's environment: a plan's env, which some checks read), started by
    `supervisor` (a run's own; None: a supervisor of this call's).

    Raises ParserUnavailable when the child cannot give an answer (its reason in the message)."""
    if engine not in PARSED_ENGINES:
        raise ValueError(f"no parser check for engine={engine}; known: {', '.join(PARSED_ENGINES)}")
    req = json.dumps({"engine": engine, "argvs": [list(a) for a in argvs], "fields": list(fields)})
    # the request and the child's output stay in a private folder (0700) that is removed afterwards:
    # a plan's argv or env is never left on disk
    with tempfile.TemporaryDirectory(prefix="servelab-parse-") as tmp:
        req_path, log_path = Path(tmp) / "request.json", Path(tmp) / "parse.log"
        req_path.write_text(req)
        sup = supervisor if supervisor is not None else Supervisor()
        try:
            child = sup.spawn(f"{engine}-parser", [python, str(SCRIPT), "--request", str(req_path)],
                              log_path=log_path, env=_quiet_env(env or {}), stop_timeout_s=5.0)  # fmt: skip
            try:
                code = child.wait(timeout_s)
            finally:
                child.stop()  # a no-op when it exited; on a timeout or Ctrl-C, its whole group goes
        except (OSError, ValueError) as e:
            raise ParserUnavailable(f"{python} could not run {SCRIPT.name}: {e}") from e
        finally:
            if supervisor is None:
                sup.stop_all()
        if code is None:
            raise ParserUnavailable(f"{python} {SCRIPT.name} gave no answer in {timeout_s:g} s (stopped)")
        text = read_log(log_path)
    lines = text.splitlines()
    line = next((ln for ln in reversed(lines) if ln.startswith(RESULT_MARK)), None)
    if line is None:
        tail = ([ln for ln in lines if ln.strip() and not ln.startswith("$ ")] or ["(no output)"])[-1]
        raise ParserUnavailable(f"{python} {SCRIPT.name} exited {code} without an answer: {tail.strip()}")
    out = json.loads(line[len(RESULT_MARK) :])
    if "unavailable" in out:
        raise ParserUnavailable(f"{engine}'s parser cannot be imported by {python}: {out['unavailable']}")
    results = [Parsed(bool(r["ok"]), r["error"], dict(r["values"])) for r in out["results"]]
    return ParseAnswer(out["engine"], out["version"], out["parser"], results)


def _quiet_env(extra: dict[str, str]) -> dict[str, str]:
    """The lab's environment and `extra` for the child, with the engine's logs and usage stats off."""
    env = {**os.environ, **extra}
    env.update({"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_LOGGING_LEVEL": "ERROR",
                "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"})  # fmt: skip
    return env


def plan_rejection(adapter: EngineAdapter, plan: LaunchPlan, facts: HostFacts,
                   timeout_s: float = DEFAULT_TIMEOUT_S, supervisor: Supervisor | None = None) -> str | None:  # fmt: skip
    """One line when the engine's own parser (in facts.engine_python) rejects `plan`, else None.

    Nothing is said when there is nothing to ask (an engine without a parser check, no engine
    found) or the parser cannot be run: the launch then goes on and the engine's start reports."""
    if adapter.name not in PARSED_ENGINES or facts.engine_version is None or not Path(facts.engine_python).exists():
        return None
    if os.environ.get(SKIP_ENV) == "1":
        log.warning("%s=1: the plan is not parsed by %s's own parser before launch", SKIP_ENV, adapter.name)
        return None
    try:
        answer = parse_with_engine(facts.engine_python, adapter.name, [engine_args(plan)], timeout_s=timeout_s,
                                   env=dict(plan.env), supervisor=supervisor)  # fmt: skip
    except (ParserUnavailable, ValueError) as e:
        log.warning("the plan was not parsed before launch: %s", e)
        return None
    r = answer.results[0]
    if r.ok:
        return None
    extra = [str(a) for a in adapter.engine.extra_args]
    words = set(re.split(r"[\s=,'\"]+", r.error or ""))
    named = [f for a in extra if (f := a.split("=", 1)[0]).startswith("-") and f in words]
    where = (
        f"fix or drop {' '.join(named)} in engine.extra_args" if named
        else f"engine.extra_args={extra}: check them against `{adapter.name} --help`" if extra
        else f"the adapter's plan does not fit this {adapter.name} version (checked against {adapter.checked_against}); "
             "install that version or report it"
    )  # fmt: skip
    return f"engine={adapter.name} {answer.version} rejects the planned command line: {_short(r.error or '')}; {where}"


def _short(msg: str, limit: int = 300) -> str:
    """The parser's message on one line, a long choice list cut."""
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."
