"""``adaret serve EXPORT`` and ``adaret triton-repo EXPORT DIR``: Triton Inference Server for an export.

Nothing heavy is imported here: the ``adaret`` parser imports this module on every invocation.
"""

from __future__ import annotations

import argparse

from adaret.core.cli_args import add_command, positive_int
from adaret.core.constants import MEMORY_MODES

# Padded tokens per Session run inside `adaret serve`: the CPU optimum measured for MiniLM-L6 exports (rows x width
# of at most 1024 ran fastest per text, at 0.4 and 1.0; benchmarks/results/batch_tokens.md)
DEFAULT_MAX_BATCH_TOKENS = 1024
# A server's instances run for hours: ONNX Runtime's arena (which keeps its high-water mark) costs nothing after
# warm-up and saves the allocations of every run (benchmarks/results/serve_load_arena.md against
# serve_load_noarena_rerun.md, measured one after the other on the same machine).
SERVE_MEMORY_MODE = "arena"

SERVE_DESCRIPTION = """Serve an export (an export directory, a .onnx graph, or a TensorRT .plan with its sidecar)
with the Triton Inference Server bundled in the nvidia-pytriton wheel. Two models: NAME takes input_ids and
attention_mask (and token_type_ids where the export has it; INT64 [batch, sequence]) and returns logits (FP32);
NAME_text takes UTF-8 texts (BYTES [batch, 1]) and returns label (BYTES) and probabilities (FP32), tokenised with
the export's own tokenizer. A question-answering export's NAME returns start_logits and end_logits (FP32 [batch,
sequence]); its NAME_text takes question and context (BYTES [batch, 1]) and returns the best answer (BYTES), score
(FP32), start and end (INT64: characters of the context), reading long contexts in overlapping windows. Both run
adaret.runtime inside Triton's Python backend. Health is at /v2/health/ready,
Prometheus metrics at :METRICS_PORT/metrics. SIGTERM or Ctrl-C stops the server after the requests in flight; the
command then exits 0."""
REPO_DESCRIPTION = """Write a Triton model repository for a datacenter Triton server: the graph on the ONNX Runtime
backend (platform onnxruntime_onnx: NAME, or NAME_seq<N> per static bucket), a TensorRT model (tensorrt_plan,
NAME_seq<N>_trt) per model_seq<N>.plan next to a static export or given as EXPORT, a Python-backend tokenizer
(NAME_tokenizer; needs numpy and tokenizers in the server's Python), a Python-backend label model (NAME_labels) and
NAME_text, an ensemble text -> label (for a question-answering export, the graph models only: its windows and span
decoding are served by `adaret serve`). Dims, data types and labels come from the graph and its metadata. The bundled
server of `adaret serve` has neither the ONNX Runtime nor the TensorRT backend: serve this repository with NVIDIA's
Triton container."""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "serve", "serve an export over HTTP/gRPC with Triton Inference Server (dynamic batching)",
                    SERVE_DESCRIPTION)
    p.add_argument("export", help="export directory, .onnx graph, or TensorRT .plan (with its sidecar)")
    p.add_argument("--port", type=_port, default=8000, help="HTTP port (default: %(default)s)")
    p.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default: %(default)s)")
    p.add_argument("--metrics-port", type=_port, default=8002,
                   help="Prometheus metrics port (default: %(default)s)")
    _add_batching(p, instances_help="model instances (each a Python-backend process with its own Session) per "
                                    "model (default: %(default)s)")
    p.add_argument("--max-batch-tokens", type=_non_negative_int, default=DEFAULT_MAX_BATCH_TOKENS, metavar="N",
                   help="run a batch Triton hands over in Session runs of at most N padded tokens (rows x bucket "
                        "width; always at least one text), 0 for no cap. On a CPU, long texts run slower per text "
                        "in a large batch than a few at a time (benchmarks/results/batch_tokens.md); raise it on a GPU "
                        "(default: %(default)s)")
    p.add_argument("--memory", choices=MEMORY_MODES, default=SERVE_MEMORY_MODE,
                   help="ONNX Runtime CPU allocator of every instance's Session. A server keeps running, so it holds "
                        "ONNX Runtime's arena and serves faster (about 1.3x the requests per second of no-arena on 2 "
                        "cores, benchmarks/results/serve_load_arena.md); no-arena keeps each run's peak lower, "
                        "the runtime's default for one-shot use (docs/runtime.md) (default: %(default)s)")
    p.add_argument("--exit-timeout-secs", type=_non_negative_int, default=30, metavar="S",
                   help="after SIGTERM, wait at most S seconds for in-flight requests and open client connections "
                        "(Triton waits for keep-alive connections to close too); past it the server stops at once "
                        "and the command exits 1 (default: %(default)s)")
    p.add_argument("--stub-env", default=None, metavar="DIR",
                   help="Python environment (numpy<2, onnxruntime, tokenizers, adaret) that runs the models inside "
                        "Triton's Python backend (default: $ADARET_TRITON_PYTHON, else triton-python inside this "
                        "environment, which `make install` creates)")
    p.set_defaults(run=_run_serve)

    p = add_command(sub, "triton-repo", "write a Triton model repository (ONNX Runtime / TensorRT backends, "
                                        "tokenizer, text ensemble) for a datacenter Triton", REPO_DESCRIPTION)
    p.add_argument("export", help="export directory, .onnx graph, or TensorRT .plan (with its sidecar)")
    p.add_argument("out", metavar="DIR", help="the model repository to write (Triton's --model-repository)")
    _add_batching(p, instances_help="instances per model (default: %(default)s)")
    p.add_argument("--cpu", action="store_true",
                   help="place the ONNX Runtime model on CPUs (instance_group KIND_CPU; default: KIND_GPU). "
                        "TensorRT models are always on a GPU, the Python models always on CPUs")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing non-empty DIR, replacing only the model directories written here")
    p.set_defaults(run=_run_triton_repo)


def _add_batching(p: argparse.ArgumentParser, instances_help: str) -> None:
    p.add_argument("--name", default="adaret",
                   help="model name: NAME and NAME_text (and the repository's other models) (default: %(default)s)")
    p.add_argument("--max-batch", type=positive_int, default=16,
                   help="max_batch_size: the most rows (texts) one batch may hold; a larger request is refused "
                        "(default: %(default)s)")
    batching = p.add_mutually_exclusive_group()
    batching.add_argument("--max-queue-delay-us", type=_non_negative_int, default=1000, metavar="N",
                          help="dynamic batching: wait at most N microseconds for more requests to join a batch "
                               "(default: %(default)s)")
    batching.add_argument("--no-dynamic-batching", action="store_true",
                          help="run each request on its own (no dynamic_batching block)")
    p.add_argument("--instances", type=positive_int, default=1, help=instances_help)


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is in [1, 65535], got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _batching(args: argparse.Namespace):
    from adaret.serving.configs import Batching

    delay = None if args.no_dynamic_batching else args.max_queue_delay_us
    return Batching(max_batch=args.max_batch, max_queue_delay_us=delay, instances=args.instances,
                    max_batch_tokens=getattr(args, "max_batch_tokens", None) or None,
                    memory=getattr(args, "memory", None))


def _run_serve(args: argparse.Namespace) -> int:
    from adaret.serving.export_facts import check_model_name
    from adaret.serving.server import Ports, serve

    ports = Ports(http=args.port, grpc=args.grpc_port, metrics=args.metrics_port)
    return serve(args.export, name=check_model_name(args.name), batching=_batching(args), ports=ports,
                 stub_env=args.stub_env, extra=[f"--exit-timeout-secs={args.exit_timeout_secs}"])


def _run_triton_repo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from adaret.serving.export_facts import check_model_name, read_export
    from adaret.serving.repository import write_standalone_repository

    name = check_model_name(args.name)
    facts = read_export(args.export)
    models = write_standalone_repository(facts, name, _batching(args), Path(args.out), overwrite=args.overwrite,
                                         gpu=not args.cpu)
    print(f"wrote {args.out}: {', '.join(models)}")
    if facts.task != "classification":
        print(f"{facts.task}: the graph models only; answers from text (windows, span decoding) are served by "
              "`adaret serve`")
    print(f"serve it with: tritonserver --model-repository={Path(args.out).resolve()}")
    return 0
