"""Sensitivity of the selection: which input, moved within a plausible range, flips the choice. Pure.

Each scenario multiplies every candidate's cost (estimate, interval and bootstrap replicates)
by a per-variant factor m_v and re-ranks (analysis.selection.rank). Operating points and SLO
feasibility are held at their measured values. Scenario families:
  price of <gpu>   m_v = 1 -/+ delta (default 0.30) for the variants on that GPU type, 1 otherwise
                   (a change of every price by the same factor never flips the choice)
  output length    mean output length times k (default 0.5 and 2). GPU time per request is
                   modelled as prefill + decode with the measured prefill share s of GPU time:
                       m_v(k) = (s_v + (1 - s_v) * k) / k
                   (cost per output token falls with longer replies when prefill is a large share);
                   variants without a measured s are not evaluated
  spot share       share sigma of the fleet on spot at the effective spot price P_spot_eff
                   (analysis.capacity.spot_effective_usd_per_hour), the rest on demand, against the
                   price P_base the points were priced at (the book's tier):
                       m_v(sigma) = ((1 - sigma) * P_od + sigma * P_spot_eff) / P_base
The tornado table has one row per input with its low and high setting, the variant chosen at
each, whether either differs from the baseline choice (`flips`), and the swing of the baseline
choice's cost (|cost_high - cost_low|); rows are ordered flips first, then by swing.

Side effects: none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from analysis.selection import Selection, rank


@dataclass(frozen=True)
class Scenario:
    input: str  # e.g. "price of h100_sxm_80g"
    setting: str  # e.g. "-30 %"
    side: str  # "low" | "high"
    multipliers: Mapping[str, float]  # variant_id -> factor on its cost; missing = 1


@dataclass(frozen=True)
class TornadoRow:
    input: str
    low_setting: str
    high_setting: str
    baseline: str | None
    chosen_low: str | None
    chosen_high: str | None
    usd_low: float | None  # the baseline choice's cost at the low setting
    usd_high: float | None
    swing_usd: float | None
    flips: bool
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def price_scenarios(sel: Selection, delta: float = 0.30) -> list[Scenario]:
    gpus = sorted({c.gpu_name for c in sel.ranked})
    out = []
    for g in gpus:
        for side, f in (("low", 1 - delta), ("high", 1 + delta)):
            m = {c.variant_id: f for c in sel.ranked if c.gpu_name == g}
            out.append(Scenario(f"price of {g}", f"{(f - 1) * 100:+.0f} %", side, m))
    return out


def output_length_multiplier(prefill_share: float, k: float) -> float:
    """m(k) = (s + (1 - s) k) / k: cost per output token when replies get k times longer."""
    return (prefill_share + (1 - prefill_share) * k) / k


def output_mix_scenarios(sel: Selection, prefill_share: Mapping[str, float | None],
                         ratios: tuple[float, float] = (0.5, 2.0)) -> list[Scenario]:  # fmt: skip
    known = {c.variant_id: prefill_share.get(c.variant_id) for c in sel.ranked}
    if not known or any(v is None for v in known.values()):
        return []
    out = []
    for side, k in zip(("low", "high"), ratios, strict=True):
        m = {vid: output_length_multiplier(float(s), k) for vid, s in known.items()}  # type: ignore[arg-type]
        out.append(Scenario("output length", f"x{k:g}", side, m))
    return out


def spot_scenarios(sel: Selection, prices: Mapping[str, tuple[float, float | None, float | None]],
                   shares: tuple[float, float] = (0.0, 0.5)) -> list[Scenario]:  # fmt: skip
    """prices: variant_id -> ($/h the point was priced at (the book's tier), on-demand $/h, effective
    spot $/h). m = ((1 - sigma) P_od + sigma P_spot_eff) / P_base; needs all three for every candidate."""
    if not sel.ranked or any(None in tuple(prices.get(c.variant_id, (None, None, None))) for c in sel.ranked):
        return []
    out = []
    for side, sigma in zip(("low", "high"), shares, strict=True):
        m = {}
        for c in sel.ranked:
            base, od, spot = prices[c.variant_id]
            m[c.variant_id] = ((1 - sigma) * od + sigma * spot) / base if base else 1.0  # type: ignore[operator]
        out.append(Scenario("spot share", f"{sigma * 100:.0f} %", side, m))
    return out


def apply(sel: Selection, sc: Scenario) -> Selection:
    """The selection re-ranked with the scenario's cost factors."""
    return rank([c.scaled(sc.multipliers.get(c.variant_id, 1.0)) for c in sel.ranked], sel.excluded,
                basis=sel.basis, metric=sel.metric)  # fmt: skip


def tornado(sel: Selection, scenarios: Sequence[Scenario]) -> list[TornadoRow]:
    """One row per input (pairs of low/high scenarios), ordered flips first, then by swing."""
    base = sel.chosen.variant_id if sel.chosen else None
    by_input: dict[str, dict[str, Scenario]] = {}
    for sc in scenarios:
        by_input.setdefault(sc.input, {})[sc.side] = sc
    rows = []
    for name, sides in by_input.items():
        lo, hi = sides.get("low"), sides.get("high")
        res = {s: apply(sel, sc) for s, sc in (("low", lo), ("high", hi)) if sc is not None}

        ul, uh = _cost_of(res.get("low"), base), _cost_of(res.get("high"), base)
        rows.append(TornadoRow(
            input=name, low_setting=lo.setting if lo else "-", high_setting=hi.setting if hi else "-", baseline=base,
            chosen_low=_chosen(res.get("low")), chosen_high=_chosen(res.get("high")), usd_low=ul, usd_high=uh,
            swing_usd=abs(uh - ul) if ul is not None and uh is not None else None,
            flips=any(_chosen(r) != base for r in res.values()),
        ))  # fmt: skip
    return sorted(rows, key=lambda r: (not r.flips, -(r.swing_usd or 0.0), r.input))


def _cost_of(sel: Selection | None, variant_id: str | None) -> float | None:
    c = next((c for c in sel.ranked if c.variant_id == variant_id), None) if sel else None
    return c.usd if c else None


def _chosen(sel: Selection | None) -> str | None:
    return sel.chosen.variant_id if sel and sel.chosen else None
