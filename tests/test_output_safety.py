"""Outputs never destroy or mix data (issue 18): refusals, one writer per directory, export sets and their manifest."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from adaret import runtime
from adaret.cli import main
from adaret.core.errors import AdaretError
from adaret.core.fileio import sha256_file
from adaret.export.pipeline import ExportConfig, run_export
from adaret.training.checkpoint import RetentionCheckpoint

# Spelled out rather than imported from adaret.core.outputs, so that each test fails on its own behaviour (not on an
# import) where that module is missing.
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".adaret.lock"


def _run(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err.strip()


def _one_line(err: str) -> bool:
    return len(err.splitlines()) == 1 and "Traceback" not in err


def _snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` (hidden ones included) and its sha256."""
    return {str(p.relative_to(directory)): sha256_file(p) for p in sorted(directory.rglob("*")) if p.is_file()}


def _user_files(directory: Path) -> Path:
    """A directory holding what a user keeps there: a file, a hidden .tmp of their own, a subdirectory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "notes.txt").write_text("mine\n")
    (directory / ".draft.tmp").write_text("also mine\n")
    (directory / "runs").mkdir(exist_ok=True)
    (directory / "runs" / "log.txt").write_text("keep me\n")
    return directory


def _export_config(checkpoint, out, **extra) -> ExportConfig:
    return ExportConfig(checkpoint=str(checkpoint), out=str(out), parity_batches=(2,), parity_lengths=(37,),
                        **({"budget": 0.5} | extra))


@pytest.fixture(scope="module")
def exported(tiny_dynamic_export) -> Path:
    """The session's optimised export at budget 0.5 (conftest); tests that change it work on a copy."""
    return Path(tiny_dynamic_export.config.out)


@pytest.fixture
def export_copy(exported, tmp_path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "e"))


# --------------------------------------------------------------------------- 1. no silent overwrite, no wiping


def test_checkpoint_save_refuses_a_non_empty_directory_and_overwrite_keeps_other_files(tiny_checkpoint, tmp_path):
    checkpoint = RetentionCheckpoint.from_pretrained(tiny_checkpoint)
    target = _user_files(tmp_path / "target")
    before = _snapshot(target)
    with pytest.raises(AdaretError, match="is not empty") as exc:
        checkpoint.save_pretrained(target)
    assert _one_line(str(exc.value)) and _snapshot(target) == before

    checkpoint.save_pretrained(target, overwrite=True)
    after = _snapshot(target)
    assert {k: after[k] for k in before} == before  # the user's files, hidden and nested ones included
    assert RetentionCheckpoint.from_pretrained(target).info.schedule == checkpoint.info.schedule
    assert not [p for p in target.iterdir() if p.name.endswith((".tmp", ".old", ".lock")) and p.name != ".draft.tmp"]

    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory\n")
    with pytest.raises(AdaretError, match="is a file, not a directory"):
        checkpoint.save_pretrained(a_file, overwrite=True)
    assert a_file.read_text() == "not a directory\n" and sorted(os.listdir(tmp_path)) == ["a_file", "target"]


def test_train_refuses_a_non_empty_or_file_out_before_any_work(tmp_path, capsys, monkeypatch):
    import adaret.training.trainer as trainer

    def started(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(trainer, "resolve_model_source", started)
    out = _user_files(tmp_path / "ck")
    before = _snapshot(out)
    code, err = _run(["train", "--out", str(out)], capsys)
    assert code == 1 and _one_line(err) and "is not empty" in err and "--overwrite" in err, err
    assert _snapshot(out) == before

    a_file = tmp_path / "ck.txt"
    a_file.write_text("x\n")
    code, err = _run(["train", "--out", str(a_file), "--overwrite"], capsys)
    assert code == 1 and _one_line(err) and "is a file, not a directory" in err, err
    assert a_file.read_text() == "x\n" and not (tmp_path / ".ck.txt.old").exists()


def _calibration_csv(path: Path) -> Path:
    words = ["alpha", "river", "market", "goal", "vote", "film", "chip", "rain"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        for i in range(40):
            writer.writerow({"text": " ".join(words[(i * 3 + j) % 8] for j in range(3 + i % 5)) + f" no{i}",
                             "label": "ab"[i % 2]})
    return path


def test_schedule_only_updates_only_its_own_files(tiny_checkpoint, tmp_path, capsys):
    checkpoint = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ck"))
    _user_files(checkpoint)
    kept = {k: v for k, v in _snapshot(checkpoint).items() if k != "config.json"}
    data = _calibration_csv(tmp_path / "calib.csv")
    base = ["calibrate", "--checkpoint", str(checkpoint), "--data", str(data), "--samples", "8", "--schedule-only",
            "--max-length", "32", "--no-progress"]

    code, err = _run(base, capsys)  # in place: no flag needed
    assert code == 0, err
    after = _snapshot(checkpoint)
    assert {k: after[k] for k in kept} == kept  # weights, tokenizer and every unrelated file untouched
    assert set(after) == set(kept) | {"config.json", "keep_schedule.png"}
    assert "calibration" in RetentionCheckpoint.from_pretrained(checkpoint).info.schedule

    other = _user_files(tmp_path / "other")
    before = _snapshot(other)
    code, err = _run([*base, "-o", str(other)], capsys)
    assert code == 1 and _one_line(err) and "is not empty" in err, err
    assert _snapshot(other) == before
    a_file = tmp_path / "not_a_dir"
    a_file.write_text("x\n")
    code, err = _run([*base, "-o", str(a_file)], capsys)
    assert code == 1 and _one_line(err) and "is a file, not a directory" in err, err
    assert a_file.read_text() == "x\n" and not (tmp_path / ".not_a_dir.old").exists()


def test_export_refuses_a_non_empty_or_file_out(tiny_checkpoint, tmp_path, capsys):
    out = _user_files(tmp_path / "o")
    before = _snapshot(out)
    args = ["export", "--budget", "0.5", "--checkpoint", str(tiny_checkpoint)]
    code, err = _run([*args, "--out", str(out)], capsys)
    assert code == 1 and _one_line(err) and "is not empty" in err and "--overwrite" in err, err
    assert _snapshot(out) == before
    a_file = tmp_path / "o.txt"
    a_file.write_text("x\n")
    code, err = _run([*args, "--out", str(a_file), "--overwrite"], capsys)
    assert code == 1 and _one_line(err) and "is a file, not a directory" in err, err
    assert a_file.read_text() == "x\n"


def test_optimize_refuses_an_existing_output_and_a_directory(export_copy, tmp_path, capsys):
    source, target = export_copy / "model.onnx", export_copy / "model.opt.onnx"
    before = _snapshot(export_copy)
    code, err = _run(["optimize", str(source), "-o", str(target)], capsys)
    assert code == 1 and _one_line(err) and "already exists" in err and "--overwrite" in err, err
    code, err = _run(["optimize", str(source), "-o", str(tmp_path)], capsys)
    assert code == 1 and _one_line(err) and "is a directory, not a file" in err, err
    assert _snapshot(export_copy) == before

    # --overwrite replaces it, and records the new graph in the directory's manifest, which the runtime accepts
    code, err = _run(["optimize", str(source), "-o", str(target), "--target", "tensorrt", "--overwrite"], capsys)
    assert code == 0, err
    assert sha256_file(target) != before["model.opt.onnx"]
    files = json.loads((export_copy / MANIFEST_NAME).read_text())["files"]
    assert files["model.opt.onnx"]["sha256"] == sha256_file(target)
    assert runtime.load(export_copy).metadata.optimized_for == "tensorrt"


# --------------------------------------------------------------------------- 2. one writer per output directory

HOLDER = """
import sys, time
from adaret.core.outputs import output_dir
with output_dir(sys.argv[1], overwrite=True) as out:
    out.staging("export")  # what a killed export leaves behind
    print("ready", flush=True)
    time.sleep(120)
"""


def _holder(directory: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    return process


def test_a_second_writer_fails_at_once_and_a_dead_writers_lock_is_taken_over(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "shared"
    holder = _holder(out)
    try:
        started = time.perf_counter()
        code, err = _run(["export", "--budget", "0.5", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
                          "--overwrite"], capsys)
        assert code == 1 and _one_line(err), err
        assert f"is being written by another adaret process (pid {holder.pid})" in err
        with pytest.raises(AdaretError, match=f"pid {holder.pid}"):
            RetentionCheckpoint.from_pretrained(tiny_checkpoint).save_pretrained(out, overwrite=True)
        assert time.perf_counter() - started < 15  # at once: no export ran
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The holder died without cleaning up: its lock file (with its pid) and its staging are still there.
    assert (out / LOCK_NAME).read_text().strip() == str(holder.pid)
    assert [p.name for p in out.iterdir() if p.name.startswith(".export.")]
    RetentionCheckpoint.from_pretrained(tiny_checkpoint).save_pretrained(out)  # taken over; the dead run's staging
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # is gone, the lock released
    RetentionCheckpoint.from_pretrained(out)


# --------------------------------------------------------------------------- 3. an export directory is one set


def test_export_writes_a_manifest_of_every_file(exported):
    files = json.loads((exported / MANIFEST_NAME).read_text())["files"]
    on_disk = {p.name for p in exported.iterdir() if p.is_file()} - {MANIFEST_NAME}
    assert set(files) == on_disk >= {"model.onnx", "model.opt.onnx", "export_report.json", "tokenizer.json"}
    assert all(files[name]["sha256"] == sha256_file(exported / name) for name in files)
    assert not [p for p in exported.iterdir() if p.name.startswith(".")]  # no staging, no lock left


def test_load_refuses_files_that_do_not_match_the_manifest(export_copy):
    # A new model.onnx next to the old model.opt.onnx (an export killed while it published its files)
    model = onnx.load(str(export_copy / "model.onnx"))
    model.metadata_props.add(key="note", value="from another export")
    onnx.save(model, str(export_copy / "model.onnx"))
    with pytest.raises(AdaretError, match=r"model\.onnx does not match manifest\.json") as exc:
        runtime.load(export_copy)
    assert _one_line(str(exc.value))

    # A graph the manifest does not list is never served either
    manifest = json.loads((export_copy / MANIFEST_NAME).read_text())
    del manifest["files"]["model.opt.onnx"], manifest["files"]["model.onnx"]
    (export_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(AdaretError, match=r"model\.opt\.onnx is not listed in manifest\.json"):
        runtime.load(export_copy)

    # Without a manifest (older exports, hand-made directories) the directory loads as before
    (export_copy / MANIFEST_NAME).unlink()
    assert runtime.load(export_copy).budget == 0.5


def test_an_export_that_fails_during_the_graph_passes_leaves_the_previous_set(tiny_checkpoint, export_copy):
    before = _snapshot(export_copy)
    reached = []

    def killed(source, output, **kwargs):
        reached.append(source)
        raise KeyboardInterrupt  # the run stops while the new model.onnx exists only in staging

    with pytest.raises(KeyboardInterrupt):
        run_export(_export_config(tiny_checkpoint, export_copy, budget=0.8, overwrite=True), killed)
    assert reached and _snapshot(export_copy) == before  # nothing published, no staging left
    assert runtime.load(export_copy).budget == 0.5


def test_overwriting_an_export_replaces_the_whole_set(tiny_checkpoint, export_copy, capsys):
    _user_files(export_copy)
    code, err = _run(["export", "--budget", "0.8", "--checkpoint", str(tiny_checkpoint), "--out", str(export_copy),
                      "--no-optimize", "--overwrite"], capsys)
    assert code == 0, err
    assert not (export_copy / "model.opt.onnx").exists()  # the old budget's optimised graph is gone with its set
    assert (export_copy / "notes.txt").is_file() and (export_copy / "runs" / "log.txt").is_file()
    assert (export_copy / ".draft.tmp").is_file()
    assert runtime.load(export_copy).budget == 0.8


def test_a_failed_export_leaves_no_directory_it_created(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import adaret.export.pipeline as pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("simulated exporter failure")

    monkeypatch.setattr(pipeline, "export_module", broken)
    out = tmp_path / "new" / "out"
    code, err = _run(["export", "--budget", "0.5", "--checkpoint", str(tiny_checkpoint), "--out", str(out)], capsys)
    assert code == 1 and "simulated exporter failure" in err
    assert not (tmp_path / "new").exists()

    existing = _user_files(tmp_path / "existing")  # an existing directory is kept, with what it held
    before = _snapshot(existing)
    code, err = _run(["export", "--budget", "0.5", "--checkpoint", str(tiny_checkpoint), "--out", str(existing),
                      "--overwrite"], capsys)
    assert code == 1 and _snapshot(existing) == before


def test_rerunning_the_default_export_replaces_its_own_previous_set(tiny_checkpoint, exported, tmp_path, monkeypatch,
                                                                    capsys):
    """``python export.py --budget B`` again: the default directory holds only the previous set, which it
    replaces; a stranger's file there makes the export refuse, as for any --out."""
    from adaret.cli import main

    monkeypatch.chdir(tmp_path)
    default_dir = tmp_path / "out" / "export-b0.5"
    shutil.copytree(exported, default_dir)  # what the first run left
    command = ["export", "--budget", "0.5", "--checkpoint", str(tiny_checkpoint), "--no-optimize"]
    assert main(command) == 0
    assert not (default_dir / "model.opt.onnx").exists()  # the previous set was replaced as a whole
    (default_dir / "notes.txt").write_text("mine")
    assert main(command) == 1
    assert "not empty" in capsys.readouterr().err
    assert (default_dir / "notes.txt").read_text() == "mine"


def test_a_manifest_naming_files_outside_its_directory_is_refused_before_any_hashing(tmp_path, monkeypatch):
    import adaret.core.outputs as outputs

    hashed: list[Path] = []
    monkeypatch.setattr(outputs, "sha256_file", lambda path: hashed.append(path) or "0" * 64)
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"not part of any export")
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.onnx").write_bytes(b"listed first, hashed never")
    (export / "link.onnx").symlink_to(outside)
    for name, message in ((str(outside), "not a file name inside"), ("../secret.bin", "not a file name inside"),
                          ("link.onnx", "resolves outside the directory")):
        files = {"model.onnx": {"sha256": "0" * 64}, name: {"sha256": "0" * 64}}
        (export / MANIFEST_NAME).write_text(json.dumps({"format": "adaret-export-manifest", "files": files}))
        with pytest.raises(AdaretError, match=message) as exc:
            outputs.check_manifest(export, [])
        assert _one_line(str(exc.value)) and not hashed, (name, hashed)


# --------------------------------------------------------------------------- 4. durable: flushed before renamed


def _record_fsync_and_replace(monkeypatch, fail_on: str | None = None, errno_code: int = 5) -> list[tuple[str, str]]:
    """Patch os.fsync and os.replace to log ("fsync", "file"|"dir") and ("replace", name) in call order."""
    import stat

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(("fsync", kind))
        if kind == fail_on:
            raise OSError(errno_code, os.strerror(errno_code))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_atomic_writes_flush_the_file_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    from adaret.core.fileio import atomic_file

    events = _record_fsync_and_replace(monkeypatch)
    with atomic_file(tmp_path / "report.json") as tmp:
        tmp.write_text("{}\n")
    assert events == [("fsync", "file"), ("replace", "report.json"), ("fsync", "dir")]
    assert (tmp_path / "report.json").read_text() == "{}\n"


def test_a_published_set_is_flushed_file_by_file_then_its_directory(tmp_path, monkeypatch):
    from adaret.core.outputs import output_dir

    with output_dir(tmp_path / "out") as claim:
        staged = claim.staging()
        for name in ("a.onnx", "b.json"):
            (staged / name).write_text(name)
        events = _record_fsync_and_replace(monkeypatch)
        claim.publish(staged, last=["a.onnx"])
    assert events[:5] == [("fsync", "file"), ("fsync", "file"), ("replace", "b.json"), ("replace", "a.onnx"),
                          ("fsync", "dir")]


def test_a_directory_that_cannot_be_flushed_is_not_an_error_but_a_failed_file_flush_is(tmp_path, monkeypatch):
    import errno

    from adaret.core.fileio import atomic_file

    _record_fsync_and_replace(monkeypatch, fail_on="dir", errno_code=errno.EINVAL)
    with atomic_file(tmp_path / "a.txt") as tmp:
        tmp.write_text("a")
    assert (tmp_path / "a.txt").read_text() == "a"

    monkeypatch.undo()
    (tmp_path / "b.txt").write_text("the previous version")
    _record_fsync_and_replace(monkeypatch, fail_on="file", errno_code=errno.EIO)
    with pytest.raises(AdaretError, match=r"cannot write .*b\.txt: ") as exc, atomic_file(tmp_path / "b.txt") as tmp:
        tmp.write_text("b")
    assert _one_line(str(exc.value))
    assert (tmp_path / "b.txt").read_text() == "the previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no staging left behind
