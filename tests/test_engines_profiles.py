"""Optimization profiles from sequence buckets: the sequence follows the static-K graph, the batch the spec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaret.core.errors import AdaretError
from adaret.engines.profiles import (
    DEFAULT_BATCHES,
    Profile,
    ShapePoint,
    bucket_for,
    parse_profile_spec,
    profile_for_graph,
    profiles_from_buckets,
)

NAMES = ("input_ids", "attention_mask", "token_type_ids")


def _dims(batch, seq):
    return {name: [batch, seq] for name in NAMES}


def test_spec_is_min_opt_max_and_one_shape_means_static():
    spec = parse_profile_spec("1x128, 8X512 ,32x512")
    assert (spec.min, spec.opt, spec.max) == (ShapePoint(1, 128), ShapePoint(8, 512), ShapePoint(32, 512))
    single = parse_profile_spec("8x512")
    assert single.min == single.opt == single.max == ShapePoint(8, 512)
    assert str(spec) == "1x128,8x512,32x512"


@pytest.mark.parametrize(("text", "message"), [
    ("8x512,32x512", "one shape or three"), ("8*512", "BATCHxSEQ"), ("0x512", "batch must be >= 1"),
    ("8x1", "sequence >= 2"), ("8x512,1x512,32x512", "batch must not decrease"),
    ("1x512,8x128,32x512", "seq must not decrease"), ("", "one shape or three")])
def test_bad_specs_are_rejected_with_a_reason(text, message):
    with pytest.raises(AdaretError, match=message):
        parse_profile_spec(text)


def test_sequence_is_pinned_to_the_graphs_bucket_and_batches_follow_the_spec():
    profile = profile_for_graph(_dims("batch", 256), parse_profile_spec("1x128,8x512,32x512"))
    assert profile.seq_len == 256 and set(profile.inputs) == set(NAMES)
    for shapes in profile.inputs.values():
        assert (shapes.min, shapes.opt, shapes.max) == ((1, 256), (8, 256), (32, 256))
    assert any("padded up to 256" in note for note in profile.notes)
    assert any("larger bucket" in note for note in profile.notes)
    assert not profile.static and profile.batch_range == (1, 8, 32)


def test_default_batches_apply_without_a_spec():
    assert profile_for_graph(_dims("batch", 128)).batch_range == DEFAULT_BATCHES


def test_a_graph_with_fixed_batch_keeps_it_and_refuses_other_batches():
    assert profile_for_graph(_dims(8, 512)).static
    assert profile_for_graph(_dims(8, 512), parse_profile_spec("8x512")).batch_range == (8, 8, 8)
    with pytest.raises(AdaretError, match="fixed at 8"):
        profile_for_graph(_dims(8, 512), parse_profile_spec("1x512,8x512,32x512"))


def test_dla_profiles_must_be_a_single_shape():
    with pytest.raises(AdaretError, match="one shape"):
        profile_for_graph(_dims("batch", 512), parse_profile_spec("1x512,8x512,32x512"), static=True)
    with pytest.raises(AdaretError, match="static shapes"):
        profile_for_graph(_dims("batch", 512), None, static=True)
    profile = profile_for_graph(_dims("batch", 512), parse_profile_spec("4x512"), static=True)
    assert profile.static and profile.batch_range == (4, 4, 4)


def test_dynamic_sequence_graphs_need_one_sequence_length():
    with pytest.raises(AdaretError, match="static-K export"):
        profile_for_graph(_dims("batch", "sequence"), parse_profile_spec("1x128,8x512,32x512"))
    assert profile_for_graph(_dims("batch", "sequence"), parse_profile_spec("1x64,2x64,4x64")).seq_len == 64


def test_inputs_must_agree_and_be_rank_two():
    with pytest.raises(AdaretError, match="disagree"):
        profile_for_graph({"input_ids": ["batch", 128], "attention_mask": ["batch", 256]})
    with pytest.raises(AdaretError, match="rank 3"):
        profile_for_graph({"input_ids": ["batch", 128, 4]})


def test_one_profile_per_bucket():
    profiles = profiles_from_buckets((512, 128, 256), NAMES, parse_profile_spec("1x128,8x512,32x512"))
    assert sorted(profiles) == [128, 256, 512]
    for seq_len, profile in profiles.items():
        assert profile.seq_len == seq_len and profile.batch_range == (1, 8, 32)
        assert all(shapes.max == (32, seq_len) for shapes in profile.inputs.values())
    assert profiles_from_buckets((64,), NAMES, batch=4)[64].static
    with pytest.raises(AdaretError, match="largest bucket is 512"):
        profiles_from_buckets((128, 512), NAMES, parse_profile_spec("1x128,8x512,8x1024"))


def test_bucket_for_picks_the_smallest_bucket_that_fits():
    assert [bucket_for(n, (128, 256, 512)) for n in (1, 128, 129, 512)] == [128, 128, 256, 512]
    with pytest.raises(AdaretError, match="a text of 513 tokens is longer than the largest bucket"):
        bucket_for(513, (128, 256, 512))


@given(batches=st.lists(st.integers(1, 64), min_size=3, max_size=3).map(sorted),
       seqs=st.lists(st.integers(2, 1024), min_size=3, max_size=3).map(sorted),
       bucket=st.integers(2, 2048))
def test_profiles_are_ordered_and_follow_the_bucket(batches, seqs, bucket):
    spec = parse_profile_spec(",".join(f"{b}x{s}" for b, s in zip(batches, seqs, strict=True)))
    profile = profile_for_graph(_dims("batch", bucket), spec)
    for shapes in profile.inputs.values():
        assert [s[1] for s in (shapes.min, shapes.opt, shapes.max)] == [bucket] * 3
        assert shapes.min[0] <= shapes.opt[0] <= shapes.max[0]
        assert (shapes.min[0], shapes.opt[0], shapes.max[0]) == tuple(batches)
    assert Profile.from_dict(profile.as_dict()) == profile


def test_malformed_profile_dict_is_an_error():
    with pytest.raises(AdaretError, match="malformed optimization profile"):
        Profile.from_dict({"seq_len": 64, "inputs": {"input_ids": {"min": [1, 64]}}})
