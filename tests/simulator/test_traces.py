"""Trace and rate-curve loading: every format, bundled data, and the errors of malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from pdscale.simulator.traces import Trace, TraceError, bundled_trace, load_rate_curve, load_trace


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


class TestNativeCsv:
    def test_reads_columns(self, tmp_path: Path) -> None:
        """arrival_s,input_tokens,output_tokens become typed columns named after the file."""
        trace = load_trace(_write(tmp_path, "t.csv", "arrival_s,input_tokens,output_tokens\n0.5,10,2\n1.5,20,3\n"))
        assert trace.arrival_s.tolist() == [0.5, 1.5]
        assert trace.input_tokens.tolist() == [10, 20]
        assert trace.output_tokens.tolist() == [2, 3]
        assert trace.arrival_s.dtype == np.float64
        assert trace.input_tokens.dtype == np.int64
        assert trace.name == "t"

    def test_unsorted_rows_are_sorted_with_a_warning(self, tmp_path: Path) -> None:
        """Rows out of time order are sorted (stable, pairs kept) and a warning is logged."""
        path = _write(tmp_path, "t.csv", "arrival_s,input_tokens,output_tokens\n2,10,1\n1,20,2\n3,30,3\n")
        with capture_logs() as logs:
            trace = load_trace(path)
        assert trace.arrival_s.tolist() == [1.0, 2.0, 3.0]
        assert trace.input_tokens.tolist() == [20, 10, 30]
        assert trace.output_tokens.tolist() == [2, 1, 3]
        assert logs[0]["event"] == "trace_rows_sorted"
        assert logs[0]["rows_out_of_order"] == 1

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ("1,0,5\n", r"t\.csv:2: input_tokens must be >= 1, got 0"),
            ("1,5,5\n2,5,-1\n", r"t\.csv:3: output_tokens must be >= 1, got -1"),
            ("1,5,5\nabc,5,5\n", r"t\.csv:3: arrival_s must be a number"),
            ("nan,5,5\n", r"t\.csv:2: arrival_s must be finite"),
            ("1,5.5,5\n", r"t\.csv:2: input_tokens must be a whole number"),
            ("1,5\n", r"t\.csv:2: expected 3 fields"),
            ("", r"t\.csv: no requests"),
        ],
    )
    def test_malformed_rows_name_file_and_line(self, tmp_path: Path, body: str, message: str) -> None:
        """Each malformed row is reported as file:line: what is wrong."""
        with pytest.raises(TraceError, match=message):
            load_trace(_write(tmp_path, "t.csv", "arrival_s,input_tokens,output_tokens\n" + body))

    def test_empty_file(self, tmp_path: Path) -> None:
        """A file with nothing in it is an error."""
        with pytest.raises(TraceError, match="empty file"):
            load_trace(_write(tmp_path, "t.csv", ""))

    def test_unknown_header(self, tmp_path: Path) -> None:
        """An unrecognised header lists the formats that are understood."""
        with pytest.raises(TraceError, match=r"t\.csv:1: unknown trace header .*TIMESTAMP"):
            load_trace(_write(tmp_path, "t.csv", "time,prompt,output\n1,2,3\n"))

    def test_missing_file(self, tmp_path: Path) -> None:
        """A path that does not exist is named."""
        with pytest.raises(TraceError, match="no such trace file"):
            load_trace(tmp_path / "nope.csv")


class TestAzureCsv:
    def test_timestamps_become_seconds_from_first(self, tmp_path: Path) -> None:
        """Azure datetime strings (7 fractional digits) become seconds from the first request."""
        text = (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n"
            "2023-11-16 18:15:46.6805900,374,44\n"
            "2023-11-16 18:15:50.9951690,396,109\n"
            "2023-11-16 18:16:46.6805900,879,55\n"
        )
        trace = load_trace(_write(tmp_path, "az.csv", text))
        assert trace.arrival_s.tolist() == pytest.approx([0.0, 4.314579, 60.0])
        assert trace.input_tokens.tolist() == [374, 396, 879]
        assert trace.output_tokens.tolist() == [44, 109, 55]

    def test_bad_timestamp_names_the_line(self, tmp_path: Path) -> None:
        """A timestamp that is not a date is reported with its line."""
        text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,1,1\nyesterday,1,1\n"
        with pytest.raises(TraceError, match=r"az\.csv:3: TIMESTAMP is not a date and time"):
            load_trace(_write(tmp_path, "az.csv", text))

    def test_zero_generated_tokens(self, tmp_path: Path) -> None:
        """GeneratedTokens of 0 is rejected with its line."""
        text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,10,0\n"
        with pytest.raises(TraceError, match=r"az\.csv:2: GeneratedTokens must be >= 1"):
            load_trace(_write(tmp_path, "az.csv", text))


class TestMooncakeJsonl:
    def test_reads_ms_timestamps(self, tmp_path: Path) -> None:
        """Mooncake timestamps (ms) become seconds from the first request; extra keys are ignored."""
        lines = [
            {"timestamp": 1000, "input_length": 6955, "output_length": 52, "hash_ids": [1, 2]},
            {"timestamp": 3500, "input_length": 100, "output_length": 7, "hash_ids": []},
        ]
        path = _write(tmp_path, "mc.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
        trace = load_trace(path)
        assert trace.arrival_s.tolist() == [0.0, 2.5]
        assert trace.input_tokens.tolist() == [6955, 100]

    @pytest.mark.parametrize(
        ("line2", "message"),
        [
            ('{"timestamp": 5, "input_length": 3}', r"mc\.jsonl:2: missing 'output_length'"),
            ('{"timestamp": 5, "input_length": 0, "output_length": 1}', r"mc\.jsonl:2: input_length must be >= 1"),
            ('{"timestamp": "x", "input_length": 1, "output_length": 1}', r"mc\.jsonl:2: timestamp must be a number"),
            ("{not json", r"mc\.jsonl:2: invalid JSON"),
            ("[1, 2]", r"mc\.jsonl:2: each line must be a JSON object"),
        ],
    )
    def test_malformed_lines(self, tmp_path: Path, line2: str, message: str) -> None:
        """Each malformed JSONL line is reported as file:line."""
        first = '{"timestamp": 0, "input_length": 1, "output_length": 1}\n'
        with pytest.raises(TraceError, match=message):
            load_trace(_write(tmp_path, "mc.jsonl", first + line2 + "\n"))


class TestBundled:
    @pytest.mark.parametrize(
        ("name", "count"), [("azure-conv", 19_366), ("azure-code", 8_819), ("mooncake-conv", 12_031)]
    )
    def test_bundled_traces(self, name: str, count: int) -> None:
        """The shipped hours (Azure 2023, Mooncake) load by name and through load_trace('bundled:...')."""
        trace = bundled_trace(name)
        assert len(trace) == count
        assert trace.name == name
        assert 3400 < trace.duration_s() < 3600
        assert len(load_trace(f"bundled:{name}")) == count

    def test_unknown_bundled_trace(self) -> None:
        """An unknown bundled name lists the available ones."""
        with pytest.raises(TraceError, match="available: azure-code, azure-conv, mooncake-conv"):
            bundled_trace("azure-chat")

    def test_bundled_rate_curve(self) -> None:
        """The ServeGen curve: 14 days of 10-minute windows."""
        curve = load_rate_curve("servegen-14d")
        assert curve.window_s == 600.0
        assert curve.duration_s == 14 * 86400
        assert len(curve.requests_per_s) == 2016
        assert load_rate_curve("bundled:servegen-14d").name == "servegen-14d"


class TestTrace:
    def _trace(self) -> Trace:
        return Trace(np.array([0.0, 1.0, 2.0, 5.0]), np.array([1, 2, 3, 4]), np.array([5, 6, 7, 8]), "t")

    def test_len_and_duration(self) -> None:
        """len counts requests; duration is last minus first arrival."""
        trace = self._trace()
        assert len(trace) == 4
        assert trace.duration_s() == 5.0

    def test_slice_is_half_open(self) -> None:
        """slice(start, end) keeps arrivals in [start, end) with their lengths."""
        part = self._trace().slice(1.0, 5.0)
        assert part.arrival_s.tolist() == [1.0, 2.0]
        assert part.input_tokens.tolist() == [2, 3]

    def test_unsorted_construction_rejected(self) -> None:
        """A Trace cannot be built with unsorted arrivals."""
        with pytest.raises(TraceError, match="sorted"):
            Trace(np.array([1.0, 0.0]), np.array([1, 1]), np.array([1, 1]), "t")


class TestRateCurve:
    def test_rate_is_linear_between_window_centres(self, tmp_path: Path) -> None:
        """The rate at a window centre is that window's rate; halfway between centres it is the mean."""
        curve = load_rate_curve(_write(tmp_path, "r.csv", "window_start_s,requests_per_s\n0,10\n60,20\n120,30\n"))
        assert curve.rate_at(np.array([30.0, 60.0, 90.0])).tolist() == pytest.approx([10.0, 15.0, 20.0])

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ("0,1\n0,2\n", r"r\.csv:3: window_start_s must increase"),
            ("0,1\n60,-2\n", r"r\.csv:3: requests_per_s must be >= 0"),
            ("0,1\n60,1\n100,1\n", r"r\.csv:4: windows must have equal length"),
            ("0,1\n", r"r\.csv: a rate curve needs at least 2 windows"),
            ("0,x\n60,1\n", r"r\.csv:2: requests_per_s must be a number"),
        ],
    )
    def test_malformed_rate_curve(self, tmp_path: Path, body: str, message: str) -> None:
        """Bad rate-curve rows are reported as file:line."""
        with pytest.raises(TraceError, match=message):
            load_rate_curve(_write(tmp_path, "r.csv", "window_start_s,requests_per_s\n" + body))


class TestTraceBounds:
    def test_negative_arrival_is_refused_naming_the_row(self, tmp_path: Path) -> None:
        """A negative arrival_s is an error that names its line."""
        path = _write(tmp_path, "t.csv", "arrival_s,input_tokens,output_tokens\n0,10,2\n-1,10,2\n")
        with pytest.raises(TraceError, match=r"t\.csv:3: arrival_s must be >= 0"):
            load_trace(path)

    def test_arrival_far_in_the_future_is_refused(self, tmp_path: Path) -> None:
        """One arrival at 1e12 s is refused instead of making the replay run for ever."""
        path = _write(tmp_path, "t.csv", "arrival_s,input_tokens,output_tokens\n0,10,2\n1e12,10,2\n")
        with pytest.raises(TraceError, match=r"t\.csv:3: arrival_s 1e12 is beyond"):
            load_trace(path)

    def test_jsonl_span_beyond_the_bound_is_refused(self, tmp_path: Path) -> None:
        """A Mooncake trace spanning more than 366 days is refused."""
        rows = [{"timestamp": 0, "input_length": 5, "output_length": 1}]
        rows.append({"timestamp": 1e15, "input_length": 5, "output_length": 1})
        path = _write(tmp_path, "t.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
        with pytest.raises(TraceError, match="beyond"):
            load_trace(path)

    def test_rows_beyond_the_limit_are_refused(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A CSV with more rows than MAX_TRACE_ROWS is refused at the first row over it."""
        from pdscale.simulator import traces

        monkeypatch.setattr(traces, "MAX_TRACE_ROWS", 2)
        path = _write(tmp_path, "t.csv", "arrival_s,input_tokens,output_tokens\n0,1,1\n1,1,1\n2,1,1\n")
        with pytest.raises(TraceError, match=r"t\.csv:4: more than 2 requests"):
            load_trace(path)

    def test_a_long_csv_is_refused_before_any_row_is_parsed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Over the limit, the row count is what is reported, even with a bad row before the limit."""
        from pdscale.simulator import traces

        monkeypatch.setattr(traces, "MAX_TRACE_ROWS", 2)
        body = "arrival_s,input_tokens,output_tokens\n0,many,1\n\n1,1,1\n2,1,1\n"
        path = _write(tmp_path, "t.csv", body)
        with pytest.raises(TraceError, match=r"t\.csv:5: more than 2 requests"):
            load_trace(path)

    def test_a_clean_csv_is_read_in_one_pass_with_the_same_values(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A plainly valid pdscale CSV never reaches the row-by-row reader, and gives the values its rows say."""
        from pdscale.simulator import traces

        def row_by_row(*_: object) -> None:
            raise AssertionError("the row-by-row reader ran")

        monkeypatch.setattr(traces, "_read_csv", row_by_row)
        body = "arrival_s,input_tokens,output_tokens\n2.5, 7 ,3\n\n0.125,+4,1\n1e1,9,2\n"
        trace = load_trace(_write(tmp_path, "t.csv", body))
        assert trace.arrival_s.tolist() == [0.125, 2.5, 10.0]
        assert trace.input_tokens.tolist() == [4, 7, 9]
        assert trace.output_tokens.tolist() == [1, 3, 2]

    @pytest.mark.parametrize(
        ("row", "message"),
        [
            ("0,1.0,1", "input_tokens must be a whole number"),
            ("0,1,0", "output_tokens must be >= 1"),
            ("nan,1,1", "arrival_s must be finite"),
            ("0,1,1,", "expected 3 fields"),
        ],
    )
    def test_a_row_the_fast_reader_declines_is_named(self, tmp_path: Path, row: str, message: str) -> None:
        """A row numpy would not read plainly (or would read too leniently) is reported by line, as before."""
        body = f"arrival_s,input_tokens,output_tokens\n0,1,1\n{row}\n"
        with pytest.raises(TraceError, match=rf"t\.csv:3: {message}"):
            load_trace(_write(tmp_path, "t.csv", body))

    def test_a_long_jsonl_is_refused(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A Mooncake trace with more rows than MAX_TRACE_ROWS is refused too, at the first row over it."""
        from pdscale.simulator import traces

        monkeypatch.setattr(traces, "MAX_TRACE_ROWS", 2)
        row = json.dumps({"timestamp": 0, "input_length": 5, "output_length": 1})
        path = _write(tmp_path, "t.jsonl", "\n".join([row] * 3) + "\n")
        with pytest.raises(TraceError, match=r"t\.jsonl:3: more than 2 requests"):
            load_trace(path)
