"""deploy/prometheus/alerts.yml and deploy/grafana/lighter-hedge.json parse, and name only metrics the code exports.

The exported names are collected from tasks/metrics.py's metric objects and collectors (what a
scrape of the maker, the worker or the alerter can show), not from a list kept here.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "lighter-hedge.json"

# What a sample's name is, per metric family type (prometheus_client's text exposition).
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "info": ("_info",), "stateset": ("",), "enum": ("",),
            "unknown": ("",)}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan", "atan2"}


def exported_metric_names() -> set[str]:
    from prometheus_client.metrics import MetricWrapperBase
    from prometheus_client.registry import Collector

    import tasks.metrics as m
    from hedge.budget import Priority, ProcessUsage, Usage

    families, collected = [], []
    for value in vars(m).values():
        if isinstance(value, MetricWrapperBase):
            families += value.describe()
    for value in vars(m).values():   # collector classes: collected with a stand-in for what they read
        if isinstance(value, type) and value.__module__ == m.__name__ and Collector in value.__mro__:
            class Budget:
                class local:
                    waited_ms = {p: 0 for p in Priority}

                @staticmethod
                def usage():
                    return Usage(tier="standard", limit=60, unit="requests", window_ms=60_000, hedge_reserve=15,
                                 used=1, requests=1, weight=6, http_429=0, backoff_left_ms=0,
                                 by_process={"maker": ProcessUsage(1, 6, 0)})
            collected += list(value(Budget(), "maker").collect())
    names = {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}
    names |= {sample.name for family in collected for sample in family.samples}   # what a scrape shows
    assert len(names) > 20, names
    return names


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, aggregations,
    keywords, label names (in {...} or by/without/on/ignoring (...)), durations or numbers."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end():].lstrip().startswith("(") or match.group(0).lower() in PROMQL_WORDS:
            continue
        names.add(match.group(0))
    return names


def test_the_promql_name_finder_finds_names_and_only_names():
    assert promql_metric_names('histogram_quantile(0.99, sum by (le, market) (rate(lh_x_bucket{a="b,c"}[5m]))) > 1e3') \
        == {"lh_x_bucket"}
    assert promql_metric_names("max(a_total) >= on (process) group_left max(b) unless absent(c) offset 5m") == \
        {"a_total", "b", "c"}
    assert promql_metric_names("sum by (kind) (rate(lh_y[$__rate_interval]))") == {"lh_y"}


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert rules and all({"alert", "expr", "labels", "annotations"} <= set(rule) for rule in rules)
    assert all(rule["labels"]["severity"] in ("critical", "warning") for rule in rules)
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    return [(rule["alert"], str(rule["expr"])) for rule in rules]


def dashboard_exprs() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 30
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert panels and all(p.get("targets") for p in panels)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    return [(p["title"], t["expr"]) for p in panels for t in p["targets"]]


@pytest.mark.parametrize("where,exprs", [("alerts.yml", rule_exprs), ("lighter-hedge.json", dashboard_exprs)])
def test_every_metric_in_the_rules_and_the_dashboard_is_exported(where, exprs):
    exported = exported_metric_names()
    used: set[str] = set()
    for title, expr in exprs():
        names = promql_metric_names(expr)
        assert names, (where, title, expr)
        unknown = names - exported
        assert not unknown, f"{where}: {title}: {sorted(unknown)} not exported by tasks/metrics.py"
        used |= names
    # The two gauges are watched by both.
    assert {"lh_hedge_queue_length", "lh_hedge_consumer_present"} <= used, (where, sorted(used))
