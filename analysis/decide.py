"""`python -m analysis.decide <results folder> [overrides]`: the decision from records only.

Composes conf/decide.yaml with Hydra-style overrides (slo=..., pricing=..., capacity.peak_rps=...),
refuses bad inputs with one line each (exit 2), runs the decision pipeline (analysis.decision:
per-point table, knees, Pareto frontier, selection, sensitivity, capacity plan, quality, what-if),
which writes a schema-versioned decision.json into the results folder, and prints a short table.
Formulas and assumptions: docs/decision.md; decision.json carries them too.

Exit codes: 0 decided (also when no variant meets the SLO: that is a result), 2 bad input.
Side effects: reads the results folder and conf/; writes decision.json (atomically); prints.
Composing initialises Hydra for the call only: a Hydra instance the caller holds is restored.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from analysis.decision import CONF, BadInput, run_decision
from analysis.schema import DecideConfig, composition_error_line, register_decide_configs

EXIT_BAD_INPUT = 2
__all__ = ["CONF", "EXIT_BAD_INPUT", "compose", "decide", "main", "summary_text", "whatif_lines"]


def compose(overrides: list[str]) -> DecideConfig:
    """conf/decide.yaml composed with `overrides`, as typed objects (raises BadInput)."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.singleton import Singleton
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf import OmegaConf

    register_decide_configs()
    held = get_gh_backup()  # a Hydra instance the caller holds (a test, an app): set aside, then restored
    Singleton._instances.pop(GlobalHydra, None)
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hcompose(config_name="decide", overrides=overrides)
        obj = OmegaConf.to_object(cfg)
    except Exception as e:  # noqa: BLE001 - Hydra/OmegaConf raise many types; one line for the user
        raise BadInput(f"invalid configuration: {composition_error_line(e)}") from e
    finally:
        if held is not None:
            restore_gh_from_backup(held)
        else:
            Singleton._instances.pop(GlobalHydra, None)
    assert isinstance(obj, DecideConfig)
    return obj


def decide(results: Path, overrides: list[str]) -> tuple[dict[str, Any], Path]:
    """Everything the command does short of printing: compose, decide, write; returns (decision, path)."""
    return run_decision(results, compose(overrides), overrides)


def _usd(v: Any) -> str:
    return "-" if v is None else f"${v:,.4g}" if abs(v) < 1000 else f"${v:,.0f}"


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def summary_text(d: dict[str, Any], path: Path) -> str:
    """The short table the command prints."""
    sel = d["selection"]
    lines = [sel.get("headline") or "", f"decision for {d['results']} (slo={d['config']['slo']['name']}, pricing={d['config']['pricing']['name']}, "
             f"basis {sel['basis']})"]  # fmt: skip
    ch, ru = sel["chosen"], sel["runner_up"]
    if ch is None:
        lines.append("chosen: none: no valid variant meets the SLO")
    else:
        bound = " (at most: knee not reached)" if ch.get("usd_bound") == "at most" else ""
        cap = (f", capacity {ch['capacity_rps']:.4g} req/s [{_num(ch.get('capacity_rps_lo'))}, {_num(ch.get('capacity_rps_hi'))}]"
               if ch.get("capacity_rps") is not None and sel["basis"] == "knee" else "")  # fmt: skip
        lines.append(f"chosen:    {ch['variant_label']:<24} {_usd(ch['usd'])}/1M goodput tokens [{_usd(ch['usd_lo'])}, "
                     f"{_usd(ch['usd_hi'])}]{bound} at {ch['load_value']:g} {ch['load_unit']}{cap} ({ch['verdict']})")  # fmt: skip
    if ru is not None:
        p = next((x["p_a_cheaper"] for x in sel["p_cheaper"] if x["b"] == ru["variant_id"]), None)
        lines.append(f"runner-up: {ru['variant_label']:<24} {_usd(ru['usd'])}/1M [{_usd(ru['usd_lo'])}, {_usd(ru['usd_hi'])}]"
                     + (" (at most: knee not reached)" if ru.get("usd_bound") == "at most" else "") + " "
                     f"at {ru['load_value']:g} {ru['load_unit']}"
                     + (f"  P(chosen cheaper) = {p:.2f}" if p is not None else ""))  # fmt: skip
    if sel["tie"]:
        labels = {c["variant_id"]: c["variant_label"] for c in sel["ranked"]}
        lines.append("TIE: intervals overlap with " + ", ".join(labels[v] for v in sel["tied"]))
    iv = d.get("intervals") or {}
    if iv and ch is not None:
        lines.append("intervals: 95 %, time-block bootstrap; include " + "; ".join(iv.get("includes") or [])
                     + "; not " + "; ".join(iv.get("excludes") or []))  # fmt: skip
    cap = d.get("capacity")
    if cap and cap["plans"] and ch is not None:
        pl = next((p for p in cap["plans"] if p["variant_id"] == ch["variant_id"]), None)
        if pl:
            m = pl["monthly_usd"]
            hw = f"{pl['gpus_peak']} GPUs" if pl["gpus_per_replica"] else f"{pl['replicas_peak']} hosts"
            lines.append(f"capacity:  peak {pl['peak_rps']:g} req/s -> {pl['replicas_peak']} replicas ({hw}), "
                         f"mu {pl['mu_rps']:.3g} req/s per replica at rho_max {pl['rho_max']:g}")  # fmt: skip
            lines.append("monthly:   " + ", ".join(f"{k} {_usd(v) if v is not None else 'n/a (no price)'}"
                                                for k, v in m.items()))  # fmt: skip
            lines.append(f"           realised $/1M (autoscaled) {_usd(pl['realised_usd_per_1m']['autoscaled'])} vs benchmark "
                         f"{_usd(pl['benchmark_usd_per_1m'])}; SLO-miss {pl['slo_miss_minutes_per_month']:.0f} min/month")  # fmt: skip
    elif ch is not None:
        lines.append("capacity:  no plan (set capacity.peak_rps, capacity.profile_rps or capacity=example)")
    rows = d["sensitivity"]["rows"]
    flips = [f"{r['input']} ({r['low_setting']}: {_label(d, r['chosen_low'])}, {r['high_setting']}: {_label(d, r['chosen_high'])})"
             for r in rows if r["flips"]]  # fmt: skip
    tested = ", ".join(r["input"] for r in rows) or "nothing"
    lines.append("sensitivity: " + ("flips the choice: " + "; ".join(flips) if flips else f"no input flips the choice (tested: {tested})"))
    for n in d["sensitivity"]["not_evaluated"]:
        lines.append(f"             not evaluated: {n}")
    q = d.get("quality") or {}
    if not q.get("applied"):
        lines.append(f"quality:   not applied ({q.get('why', 'no quality section')})")
    for v in q.get("variants") or []:
        t1, pr = v.get("top1_agreement") or {}, v.get("ppl_ratio") or {}
        figs = (f"top-1 {t1['value']:.4f}" if t1.get("value") is not None else "top-1 n/a") + \
            (f", ppl ratio {pr['value']:.4f}" if pr.get("value") is not None else "")  # fmt: skip
        lines.append(f"quality:   {v['variant_label']:<24} {v['gate']:<9} {figs}"
                     + (f"  ({'; '.join(v['gate_reasons'])})" if v["gate_reasons"] else ""))  # fmt: skip
    for e in sel["excluded"]:
        lines.append(f"excluded:  {e['variant_label']:<24} " + "; ".join(f"{r['kind']}: {r['message']}" for r in e["reasons"]))
    lines += whatif_lines(d)
    lines.append(f"wrote {path}")
    return "\n".join(lines)


def whatif_lines(d: dict[str, Any]) -> list[str]:
    """One line per what-if row (decision.json whatif), for the printed summary."""
    w = d.get("whatif")
    if not w:
        return []
    out = [f"what-if:   volume {w['volume_source']}"]
    for r in w["rows"]:
        if r["status"] != "evaluated":
            out.append(f"           {r['technique']}: not evaluated: {r['why']}")
            continue
        saved = r["usd_per_month_saved"]
        money = f"{_usd(saved)}/month saved" if saved is not None else (
            f"{_usd(r['usd_per_1m_saved'])}/1M saved" if r.get("usd_per_1m_saved") is not None else "$/month n/a (no volume)")
        out.append(f"           {r['technique']}: {money}; {r['headline']}")
    return out


def _label(d: dict[str, Any], variant_id: str | None) -> str:
    return next((c["variant_label"] for c in d["selection"]["ranked"] if c["variant_id"] == variant_id), "none")


USAGE = "usage: python -m analysis.decide <results folder or run folder> [group=option | key=value ...]"


def main(argv: list[str] | None = None) -> int:
    from analysis.cost import PriceMissing
    from analysis.results import ResultsError

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE + "\n" + (__doc__ or ""))
        return 0 if args else EXIT_BAD_INPUT
    results, overrides = Path(args[0]), args[1:]
    try:
        d, path = decide(results, overrides)
    except (BadInput, ResultsError, PriceMissing) as e:
        for line in str(e).splitlines():
            print(f"decide: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(summary_text(d, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
