"""`adaret validate --task summarization` on the tiny random encoder-decoder of test_export_summarization.

The checkpoint carries a reference decoder of its own (another random decoder), and the data file's summaries are
that full model's greedy summaries: pytorch-full scores ROUGE-L near 100 by construction, the deployed decoder far
less, so the ROUGE-L floor is a check that can fail. What is checked is the plumbing and the parity: the rows,
ONNX Runtime's tokens equal to PyTorch hard top-M's, the speed and memory table, the plots, one-line errors.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import CHUNKS, FRACTIONS, SPECIAL, tiny_summarizer

from adaret.cli import main
from adaret.core.chunks import document_chunks, pad_chunks, plain_tokenizer
from adaret.training.seq2seq_checkpoint import Seq2SeqCheckpoint, Seq2SeqInfo

WORDS = ["market", "council", "river", "station", "budget", "player", "museum", "storm", "harvest", "election",
         "engine", "doctor", "theatre", "bridge", "festival", "school", "garden", "factory", "league", "satellite"]


def documents(count: int = 80, seed: int = 0) -> list[str]:
    """Texts from a few words to past three 64-token chunks (CHUNKS reads 200 tokens)."""
    rng = random.Random(seed)
    return [f"Report {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.choice((4, 15, 40, 90, 160))))
            for i in range(count)]


def full_model_summaries(model, reference, tokenizer, texts: list[str]) -> list[str]:
    """The full model's (reference decoder, full memory) greedy summary of each text alone."""
    plain = plain_tokenizer(tokenizer.backend_tokenizer)
    deployed, model.decoder = model.decoder, reference
    try:
        found = []
        for text in texts:
            chunks = document_chunks(plain, [text], chunk_length=CHUNKS.chunk_length,
                                     max_source_tokens=CHUNKS.max_source_tokens, cls_id=SPECIAL["start"],
                                     sep_id=SPECIAL["end"])
            ids, mask = (torch.from_numpy(a) for a in pad_chunks(chunks, SPECIAL["pad"]))
            tokens = model.generate(ids, mask, start_id=SPECIAL["start"], end_id=SPECIAL["end"],
                                    max_new_tokens=CHUNKS.max_target_tokens - 1, mode="full")[0].tolist()
            tokens = tokens[:tokens.index(SPECIAL["end"])] if SPECIAL["end"] in tokens else tokens
            found.append(plain.decode(tokens, skip_special_tokens=True).strip() or "nothing")
    finally:
        model.decoder = deployed
    return found


@pytest.fixture(scope="module")
def summarization_setup(tmp_path_factory, tokenizer) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("validate-s2s")
    model, reference = tiny_summarizer(), tiny_summarizer(seed=1).decoder
    texts = documents()
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps({"text": t, "summary": s}) + "\n"
                            for t, s in zip(texts, full_model_summaries(model, reference, tokenizer, texts),
                                            strict=True)))
    info = Seq2SeqInfo(encoder_config=model.encoder.config.to_diff_dict() | {"model_type": "bert"},
                       decoder_config=model.decoder.lm.config.to_diff_dict() | {"model_type": "bert"},
                       retention={}, chunks=asdict(CHUNKS), special_tokens=dict(SPECIAL),
                       schedule={"keep_fractions": FRACTIONS},
                       training={"budget": 0.4, "data": str(data), "seed": 0})
    checkpoint = root / "ckpt"
    Seq2SeqCheckpoint(model, tokenizer, info, reference_decoder=reference).save_pretrained(checkpoint)
    return checkpoint, data


@pytest.fixture(scope="module")
def validated(summarization_setup, tmp_path_factory):
    checkpoint, _ = summarization_setup
    out = tmp_path_factory.mktemp("validate-s2s-report")
    code = main(["validate", "--task", "summarization", str(checkpoint), "--out", str(out), "--overwrite",
                 "--accuracy-floor", "0", "--threads", "1", "--batch-size", "4"])
    return code, out, json.loads((out / "report.json").read_text())


def test_report_rows_and_files(validated):
    code, out, report = validated
    assert code == 0 and report["passed"], report["checks"]
    assert report["task"] == "summarization" and report["data"] == "pairs.jsonl (test split)"
    assert report["documents"] >= 4 and report["max_new_tokens"] == CHUNKS.max_target_tokens - 1
    rows = {(r["backend"], r["budget"]): r for r in report["rows"]}
    assert set(rows) == {("pytorch-full", 1.0), ("pytorch-hard", 0.4), ("onnxruntime", 0.4)}
    for row in rows.values():
        low, high = row["rougeL_ci95"]
        assert 0.0 <= low <= row["rougeL"] <= high <= 100.0 and 0.0 <= row["rouge2"] <= row["rouge1"] <= 100.0
    # the data's summaries are what the full model generates: the pytorch-full row is that model
    assert rows["pytorch-full", 1.0]["rougeL"] > 90 and rows["pytorch-full", 1.0]["rougeL_vs_full"] == 1.0
    assert {c["check"] for c in report["checks"]} == {"token_agreement", "rouge-l_floor"}
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "rouge.png", "speed.png", "exports"}
    markdown = (out / "report.md").read_text()
    assert "PASSED" in markdown and "| onnxruntime | 0.4 |" in markdown and "## ONNX Runtime speed" in markdown


def test_onnxruntime_generates_pytorch_hard_tokens(validated):
    rows = {r["backend"]: r for r in validated[2]["rows"]}
    assert rows["onnxruntime"]["token_agreement_with_reference"] == 1.0 and not validated[2]["disagreements"]
    assert rows["onnxruntime"]["rougeL"] == rows["pytorch-hard"]["rougeL"]


def test_speed_and_memory_against_the_full_export(validated):
    full, retained = validated[2]["speed"]
    assert (full["config"], full["budget"], retained["budget"]) == ("onnxruntime-full", 1.0, 0.4)
    assert full["encoder_rows"] == retained["encoder_rows"] > full["documents"] == 4  # multi-chunk documents
    # the memory is what survives the last gated layer: about 20% of each 64-token chunk at the trained schedule
    assert retained["memory_tokens"] < 0.5 * full["memory_tokens"]
    assert retained["cross_cache_reduction"] == pytest.approx(
        1 - retained["cross_cache_bytes"] / full["cross_cache_bytes"], abs=1e-4)
    assert retained["cross_cache_reduction"] > 0.5
    for row in (full, retained):
        assert min(row["encoder_ms"], row["decoder_step_ms"], row["fixed_steps_ms"], row["summarize_ms"]) > 0
        assert row["peak_memory_mib"] >= 0 and row["peak_memory_mib_arena"] >= 0
    assert retained["decoder_speedup"] > 0 and retained["summarize_tokens"] > 0


def test_a_failing_floor_fails_the_run(validated, summarization_setup, tmp_path, capsys):
    """An export validated against its checkpoint (and the full export given): at a floor of 100% of full ROUGE-L
    the deployed decoder fails, and the run exits 1; token agreement still holds."""
    checkpoint, _ = summarization_setup
    exports = validated[1] / "exports"
    code = main(["validate", "--task", "summarization", str(exports / "b0.4"), "--checkpoint", str(checkpoint),
                 "--full-export", str(exports / "b1"), "--out", str(tmp_path / "r"), "--accuracy-floor", "1.0",
                 "--no-memory", "--max-examples", "4", "--threads", "1"])
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    checks = {c["check"]: c for c in report["checks"]}
    assert code == 1 and not report["passed"] and report["documents"] == 4
    assert not checks["rouge-l_floor"]["passed"] and checks["token_agreement"]["passed"]
    assert "peak_memory_mib" not in report["speed"][0] and not (tmp_path / "r" / "exports").exists()
    assert "FAIL rouge-l_floor onnxruntime@0.4" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["classification-checkpoint", "missing-data", "export-without-checkpoint",
                                  "classification-data", "full-export-not-full"])
def test_bad_input_is_one_line(case, validated, summarization_setup, tiny_checkpoint, tmp_path, capsys):
    checkpoint, _ = summarization_setup
    exports = validated[1] / "exports"
    args = {
        "classification-checkpoint": [str(tiny_checkpoint)],
        "missing-data": [str(checkpoint), "--data", str(tmp_path / "none.jsonl")],
        "export-without-checkpoint": [str(exports / "b0.4")],
        "classification-data": [str(checkpoint), "--data", "bbc-news"],
        "full-export-not-full": [str(exports / "b0.4"), "--checkpoint", str(checkpoint), "--full-export",
                                 str(exports / "b0.4")],
    }[case]
    expected = {"classification-checkpoint": "is not a summarization checkpoint",
                "missing-data": "does not exist", "export-without-checkpoint": "give --checkpoint",
                "classification-data": "unknown summarization data 'bbc-news'",
                "full-export-not-full": "is an export at budget 0.4"}[case]
    code = main(["validate", "--task", "summarization", *args, "--out", str(tmp_path / "r"), "--no-memory"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and expected in err and len(err.splitlines()) == 1, err
