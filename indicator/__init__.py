"""Indicator 8.3 ("xã có đài truyền thanh và hệ thống loa đến các thôn") computed from
telemetry: periods, availability, verdicts with evidence, roll-ups and periodic reports."""
