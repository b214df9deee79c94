"""What ``export.py --budget auto`` costs, against the export-and-validate rounds a user would run by hand.

    python benchmarks/auto_budget_cost.py [--min-accuracy 0.99] [--threads 1] [--name auto_budget_cost]

Without the search, a user picks a budget by rounds of: export at a guess, then measure the graph's accuracy on
their eval data. This runs, one after another on the bundled checkpoint and its recorded data (BBC News):

1. a plain export at 0.4 (``python export.py --budget 0.4``), the cost the search adds to;
2. the cheapest validation a user could run on it: the exported graph through ``adaret.runtime`` on the whole
   eval split, accuracy only (this script, ``--graph-accuracy``);
3. ``adaret validate --onnx`` on the same graph, the shipped check (PyTorch full and top-M, ONNX Runtime, latency);
4. ``python export.py --budget auto --min-accuracy M``.

Every step is a fresh process with the same thread count, timed by wall clock, so import and load times count as a
user would see them. One round = step 1 + step 2 (the cheap round) or step 1 + step 3 (the shipped round). The target
of issue 13 is (step 4 - step 1) <= 3 rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine, scratch_directory, write_results

REPO = Path(__file__).resolve().parent.parent


def timed(command: list[str], threads: int) -> tuple[float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    print(f"{seconds:7.1f} s  {' '.join(command[1:])}", flush=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds, done.stdout


def graph_accuracy(export: str, threads: int) -> None:
    """Step 2, run in its own process: accuracy of an exported graph on the eval split of its checkpoint's data."""
    from adaret.export.config import DEFAULT_CHECKPOINT
    from adaret.runtime import load
    from adaret.training.data import load_splits

    training = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())["training"]
    split = load_splits(training["data"], seed=int(training.get("seed", 0))).eval
    session = load(export, threads=threads)
    predicted = [p.label for p in session.classify(split.texts)]
    truth = [split.label_names[i] for i in split.labels]
    right = sum(p == t for p, t in zip(predicted, truth, strict=True))
    print(json.dumps({"examples": len(truth), "accuracy": right / len(truth)}))


def run(min_accuracy: float, threads: int, work: Path) -> dict:
    python = sys.executable
    plain = work / "plain"
    steps: dict[str, float] = {}
    steps["plain export at 0.4"], _ = timed([python, "export.py", "--budget", "0.4", "--out", str(plain)], threads)
    graph = str(plain / "model.onnx")
    steps["graph accuracy on the eval split"], out = timed(
        [python, __file__, "--graph-accuracy", graph, "--threads", str(threads)], threads)
    accuracy = json.loads(out.strip().splitlines()[-1])
    steps["adaret validate --onnx"], _ = timed(
        [python, "-m", "adaret.cli", "validate", "--onnx", graph, "--out", str(work / "validate"), "--no-memory",
         "--threads", str(threads)], threads)
    auto = work / "auto"
    steps["export --budget auto"], _ = timed(
        [python, "export.py", "--budget", "auto", "--min-accuracy", str(min_accuracy), "--out", str(auto)], threads)
    report = json.loads((auto / "export_report.json").read_text())
    decision = report["budget_search"]
    return {"steps_seconds": {k: round(v, 1) for k, v in steps.items()}, "graph_accuracy": accuracy,
            "decision": decision}


def markdown(payload: dict) -> str:
    steps = payload["steps_seconds"]
    extra = steps["export --budget auto"] - steps["plain export at 0.4"]
    cheap = steps["plain export at 0.4"] + steps["graph accuracy on the eval split"]
    shipped = steps["plain export at 0.4"] + steps["adaret validate --onnx"]
    decision = payload["decision"]
    lines = [
        "# What `--budget auto` costs", "", f"`{payload['command']}`", "",
        *([payload["note"], ""] if payload.get("note") else []),
        f"Machine: {payload['machine_line']}. {payload['threads']} thread(s) for every step; each step a fresh "
        "process, timed by wall clock (imports and loading included), one run each, one after another.", "",
        "| step | seconds |", "| --- | --- |",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in steps.items()], "",
        f"- The search chose budget {decision['chosen_budget']:g} after {len(decision['points'])} measured points "
        f"({decision['search_seconds']:.0f} s of search inside the auto export).",
        f"- It adds {extra:.0f} s to a plain export: {extra / cheap:.2f} cheap rounds (export + graph accuracy, "
        f"{cheap:.0f} s each) or {extra / shipped:.2f} shipped rounds (export + `adaret validate`, {shipped:.0f} s).",
        f"- Target (issue 13): at most 3 rounds. "
        f"{'Met' if extra <= 3 * cheap else 'Not met'} against the cheap round.", ""]
    held = decision.get("held_out")
    if held:
        lines.append(f"- Held-out half ({held['examples']} examples): ratio {held['ratio']:.4f} of full "
                     f"({'holds' if held['holds'] else 'does not hold'}).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-accuracy", type=float, default=0.99)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="auto_budget_cost")
    parser.add_argument("--work", default=None, help="keep the exports in this folder (default: a temporary one)")
    parser.add_argument("--note", default="", help="a line for the report: what code ran, what ran beside it")
    parser.add_argument("--graph-accuracy", metavar="EXPORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.graph_accuracy:
        graph_accuracy(args.graph_accuracy, args.threads)
        return
    with scratch_directory("adaret-auto-cost-", args.work) as work:
        payload = run(args.min_accuracy, args.threads, work)
    shown = [f"--min-accuracy {args.min_accuracy:g}", f"--threads {args.threads}", f"--name {args.name}"]
    payload.update(command="python benchmarks/auto_budget_cost.py " + " ".join(shown),  # --work changes nothing
                   machine=machine(), threads=args.threads, note=args.note)
    payload["machine_line"] = describe(payload["machine"])
    write_results(args.name, payload, markdown(payload))


if __name__ == "__main__":
    main()
