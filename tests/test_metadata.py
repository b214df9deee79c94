"""The typed artifact schema: every stage reads an export's metadata through ``ExportMetadata``."""

from __future__ import annotations

import pytest

from adaret.core.metadata import PREFIX, SCHEMA_VERSION, ExportMetadata, MetadataError

GOOD = {"adaret.form": "dynamic", "adaret.budget": "0.4", "adaret.seq_len": "dynamic", "adaret.max_positions": "512",
        "adaret.label_names": '["business", "tech"]', "adaret.input_names": '["input_ids", "attention_mask"]',
        "adaret.schedule": '{"denominator": 10000, "numerators": [10000, 4000]}', "other.tool": "kept out"}


def test_round_trip_keeps_every_field_and_unknown_adaret_keys():
    meta = ExportMetadata.from_props({**GOOD, "adaret.future_key": "x"})
    assert meta.budget == 0.4 and meta.seq_len is None and meta.max_positions == 512
    assert meta.label_names == ["business", "tech"] and meta.schedule["numerators"] == [10000, 4000]
    assert meta.extra == {"future_key": "x"}
    props = meta.to_props()
    assert props[PREFIX + "schema_version"] == str(SCHEMA_VERSION) and props[PREFIX + "seq_len"] == "dynamic"
    assert ExportMetadata.from_props(props) == meta


def test_exports_from_before_the_schema_version_read_as_version_one():
    assert "adaret.schema_version" not in GOOD
    assert ExportMetadata.from_props(GOOD).schema_version == 1


@pytest.mark.parametrize(("key", "value", "message"), [
    ("adaret.label_names", "{not json", "label_names is not a valid JSON"),
    ("adaret.label_names", '"abc"', "label_names must be a JSON list"),
    ("adaret.label_names", '["a", 3]', "label_names must be a JSON list"),
    ("adaret.label_names", '["a", "a"]', "duplicates"),
    ("adaret.seq_len", "7", "contradicts adaret.form dynamic"),
    ("adaret.budget", "lots", "budget is not a valid float"),
    ("adaret.budget", "1.5", "budget must be a number in"),
    ("adaret.budget", "nan", "not finite"),
    ("adaret.max_positions", "-3", "max_positions must be a positive integer"),
    ("adaret.max_positions", str(10**10), "beyond any encoder's positions"),
    ("adaret.form", "sideways", "adaret.form is 'sideways'"),
    ("adaret.schedule", '{"denominator": 10000}', "no list of numerators"),
    ("adaret.schema_version", str(SCHEMA_VERSION + 1), "upgrade adaret"),
])
def test_malformed_metadata_is_refused_with_one_line_naming_the_field(key, value, message):
    with pytest.raises(MetadataError, match=message) as caught:
        ExportMetadata.from_props({**GOOD, key: value}, "model.onnx")
    assert "\n" not in str(caught.value) and "model.onnx" in str(caught.value)


def test_a_graph_adaret_did_not_export_is_named_as_such():
    with pytest.raises(MetadataError, match="not exported by adaret"):
        ExportMetadata.from_props({"other.tool": "x"}, "foreign.onnx")
    assert ExportMetadata.from_props_if_any({"other.tool": "x"}) is None


def test_a_static_graph_needs_its_bucket_length():
    static = {**GOOD, "adaret.form": "static"}
    with pytest.raises(MetadataError, match="contradicts"):
        ExportMetadata.from_props(static)
    assert ExportMetadata.from_props({**static, "adaret.seq_len": "128"}).seq_len == 128
