"""The PromQL selector scanner the dashboard and rule checks rely on."""

from __future__ import annotations

from tests.deploy.deploy_support import Selector, selectors


class TestSelectors:
    def test_finds_metric_inside_functions_and_aggregations(self) -> None:
        """Metric names nested in rate() and sum by () are found; function names are not."""
        expr = 'sum by (pool, le) (rate(vllm:time_to_first_token_seconds_bucket{role="prefill"}[5m]))'
        assert selectors(expr) == [Selector("vllm:time_to_first_token_seconds_bucket", (("role", "=", "prefill"),))]

    def test_skips_grouping_label_lists(self) -> None:
        """Labels in by/without/on/ignoring lists are not taken for metric names."""
        expr = "a_total / on (pool) group_left (role) b_total and ignoring (x) c without (y)"
        assert [s.metric for s in selectors(expr)] == ["a_total", "b_total", "c"]

    def test_skips_literals_and_keywords(self) -> None:
        """Numbers, durations, strings and keywords such as bool, offset and inf are skipped."""
        expr = 'x > bool 14.4 * 1e-2 or y offset 5m unless label_replace(z, "dst", "$1", "src", "(.*)") > inf'
        assert [s.metric for s in selectors(expr)] == ["x", "y", "z"]

    def test_parses_all_matcher_operators(self) -> None:
        """=, !=, =~ and !~ matchers are returned with their values."""
        (selector,) = selectors('m{a="1", b!="2",c=~"x|y" , d!~".*"}')
        assert selector.matchers == (("a", "=", "1"), ("b", "!=", "2"), ("c", "=~", "x|y"), ("d", "!~", ".*"))

    def test_reports_nameless_selector(self) -> None:
        """A selector with only matchers is reported with an empty metric name."""
        assert selectors('{__name__=~"pdscale_.*"}') == [Selector("", (("__name__", "=~", "pdscale_.*"),))]
