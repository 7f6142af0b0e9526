"""The report's answer to "which file do I ship on this device": per device, the variant the rule
picks (edgecls.selection.choose, the choice tune makes), the runner-up, and whether the two differ
beyond noise: latency by the p50s of repeated processes, accuracy by the exact McNemar test on the
images only one of them gets right."""
from __future__ import annotations

from ..selection import (SIGNIFICANCE, Budgets, accuracy_test, choose, faster_beyond_noise, latency_interval,
                         signed_points)
from .model import FLOAT_PRECISIONS


def rule_text(config) -> str:
    what = "fastest (batch-1 p50)" if config.objective == "latency" else "smallest (file bytes)"
    return (f"the {what} variant within {config.max_drop:g} point{'s' if config.max_drop != 1 else ''} of top-1 of the most "
            f"accurate float variant on this device (edgecls report --max-drop {config.max_drop:g} --objective "
            f"{config.objective})")


def _latency(c: dict) -> str:
    iv = latency_interval(c)
    rounds = c.get("latency_rounds_ms") or []
    return f"p50 {c['latency_ms']:.3f} ms" + (f" ({iv[0]:.3f}-{iv[1]:.3f} over {len(rounds)} processes)" if iv else "")


def _figures(c: dict, base: dict | None) -> str:
    drop = "" if base is None or c is base else f" ({signed_points(c['drop'])} points against {base['id']})"
    return f"top-1 {100 * c['accuracy']:.2f}%{drop}, {_latency(c)}, {c['bytes']:,} bytes"


def compare(a: dict, b: dict) -> dict:
    """How the pick `a` and the runner-up `b` differ, and whether beyond noise."""
    out = {}
    ia, ib = latency_interval(a), latency_interval(b)
    if ia and ib:
        out["latency"] = ("faster" if faster_beyond_noise(a, b) else "slower" if faster_beyond_noise(b, a) else "tied")
    else:
        out["latency"] = "unknown"  # measured in one process: no interval
    test = accuracy_test(a, b)
    if test is not None:
        out["accuracy_test"] = test
        better = test["only_a_right"] > test["only_b_right"]
        out["accuracy"] = ("tied" if test["mcnemar_p"] >= SIGNIFICANCE or test["only_a_right"] == test["only_b_right"]
                           else "more accurate" if better else "less accurate")
    else:
        out["accuracy"] = "unknown"
    out["size"] = "smaller" if a["bytes"] < b["bytes"] else "larger" if a["bytes"] > b["bytes"] else "equal"
    return out


def _comparison_text(a: dict, b: dict, cmp: dict) -> str:
    parts = []
    if cmp["latency"] == "unknown":
        parts.append("latency measured in one process each: no interval, so the speed difference may be noise")
    elif cmp["latency"] == "tied":
        parts.append(f"as fast as each other: the rank test over their processes' p50s cannot order them ({_latency(a)} "
                     f"against {_latency(b)})")
    else:
        parts.append(f"{cmp['latency']} beyond noise by the rank test over their processes' p50s ({_latency(a)} against "
                     f"{_latency(b)})")
    test = cmp.get("accuracy_test")
    if test is None:
        parts.append("accuracy not compared image by image (the report has no per-image results)")
    else:
        verdict = "not distinguishable" if cmp["accuracy"] == "tied" else f"the pick {cmp['accuracy']}"
        parts.append(f"on {test['images']:,} images only the pick is right on {test['only_a_right']}, only {b['id']} on "
                     f"{test['only_b_right']} (McNemar p = {test['mcnemar_p']:.2g}: {verdict})")
    return "; ".join(parts)


def recommend(report, device: str) -> dict:
    config = report.config
    cands = report.candidates(device)
    rec = {"device": device, "rule": rule_text(config), "winner": None, "runner_up": None, "baseline": None,
           "candidates": len(cands), "lines": []}
    if not cands:
        rec["lines"] = [f"Nothing to recommend on {device}: no variant was measured with an accuracy there."]
        return rec
    floats = [c for c in cands if c.get("precision") in FLOAT_PRECISIONS]
    # The most accurate float variant; among equals the file the bench's agreement is measured
    # against, then fp32, then by name: never by a latency that varies from run to run.
    ref = cands[0]["row"].get("agreement_reference")
    base = min(floats or cands, key=lambda c: (-c["accuracy"], c["id"] != ref, c.get("precision") != "fp32", c["id"]))
    for c in cands:
        c["drop"] = round(100 * (base["accuracy"] - c["accuracy"]), 4)
    rec["baseline"] = {"name": base["id"], "accuracy": base["accuracy"], "float": bool(floats)}
    choice = choose(cands, Budgets(max_drop=config.max_drop), config.objective)
    within = choice.feasible
    based = (f"{base['id']}, the most accurate float variant here, scores {100 * base['accuracy']:.2f}%" if floats else
             f"no float variant was measured here: the rule counts from the most accurate one, {base['id']} "
             f"({100 * base['accuracy']:.2f}%)")
    if choice.winner is None:
        rec["lines"] = [f"No variant on {device} is within {config.max_drop:g} points of {base['id']}.", based + "."]
        return rec
    w, r = choice.winner, choice.runner_up
    rec.update(winner=w["id"], tied_with=list(choice.tied_with),
               figures={"accuracy": w["accuracy"], "drop": w["drop"], "p50_ms": w["latency_ms"], "bytes": w["bytes"],
                        "p50_interval": latency_interval(w)})
    lines = [f"Ship {w['id']} on {device}: {_figures(w, base)}.",
             f"Rule: {rec['rule']}; {within} of {len(cands)} measured variants qualify; {based}."]
    if choice.tied_with:
        what = "as fast as" if config.objective == "latency" else "as small as"
        how = "within what repeated processes resolve" if config.objective == "latency" else "to the byte"
        lines.append(f"{w['id']} is {what} {', '.join(choice.tied_with)} {how}" +
                     (f"; it is more accurate beyond noise than {choice.measured_best}, the measured "
                      f"{'fastest' if config.objective == 'latency' else 'smallest'}." if w["id"] != choice.measured_best
                      else ": any of them is as good a choice on this count."))
    if r is not None:
        cmp = compare(w, r)
        rec["runner_up"] = r["id"]
        rec["comparison"] = cmp
        lines.append(f"Runner-up: {r['id']} ({_figures(r, base)}); {_comparison_text(w, r, cmp)}.")
    else:
        lines.append("No other variant qualifies.")
    rec["lines"] = lines
    return rec
