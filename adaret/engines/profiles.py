"""Optimization profiles from sequence buckets (pure Python).

A static-K graph is exported for one sequence length n (its bucket): every TopK has K_l = max(2, ceil(f_l * n))
baked in, so the sequence dimension of every profile must be exactly n, and only the batch may vary. A profile
spec such as ``1x128,8x512,32x512`` is read like trtexec's --minShapes/--optShapes/--maxShapes: MIN, OPT, MAX
as BATCHxSEQ. The batches carry over; the sequence dimension follows the graph's bucket, and requests shorter
than the bucket are padded up to it by the runtime.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from adaret.core.errors import AdaretError
from adaret.core.padding import smallest_width

_POINT = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True)
class ShapePoint:
    batch: int
    seq: int

    def __str__(self) -> str:
        return f"{self.batch}x{self.seq}"


@dataclass(frozen=True)
class ProfileSpec:
    """MIN, OPT and MAX shapes as the user wrote them (before they are pinned to a graph's bucket)."""

    min: ShapePoint
    opt: ShapePoint
    max: ShapePoint

    @property
    def points(self) -> tuple[ShapePoint, ShapePoint, ShapePoint]:
        return self.min, self.opt, self.max

    @property
    def batches(self) -> tuple[int, int, int]:
        return self.min.batch, self.opt.batch, self.max.batch

    def __str__(self) -> str:
        return ",".join(str(p) for p in self.points)


#: serve partial batches down to 1, tune for 8 (the issue's target workload), allow up to 32
DEFAULT_BATCHES = (1, 8, 32)


@dataclass(frozen=True)
class ShapeRange:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def static(self) -> bool:
        return self.min == self.opt == self.max


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimization profile: a shape range per input, all for the same sequence bucket."""

    seq_len: int
    inputs: dict[str, ShapeRange]
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def static(self) -> bool:
        return all(r.static for r in self.inputs.values())

    @property
    def batch_range(self) -> tuple[int, int, int]:
        first = next(iter(self.inputs.values()))
        return first.min[0], first.opt[0], first.max[0]

    def as_dict(self) -> dict:
        return {"seq_len": self.seq_len,
                "inputs": {name: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)}
                           for name, r in self.inputs.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> Profile:
        try:
            inputs = {str(name): ShapeRange(tuple(int(v) for v in r["min"]), tuple(int(v) for v in r["opt"]),
                                            tuple(int(v) for v in r["max"]))
                      for name, r in data["inputs"].items()}
            return cls(int(data["seq_len"]), inputs)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:  # int(inf): OverflowError
            raise AdaretError(f"malformed optimization profile {dict(data)!r:.200}: {exc}") from None


def parse_profile_spec(text: str) -> ProfileSpec:
    """``"1x128,8x512,32x512"`` (MIN,OPT,MAX) or ``"8x512"`` (one shape: a static profile)."""
    parts = [part for part in text.split(",") if part.strip()]
    points = []
    for part in parts:
        match = _POINT.match(part)
        if not match:
            raise AdaretError(f"bad profile shape {part.strip()!r}: write BATCHxSEQ, e.g. 8x512")
        point = ShapePoint(int(match.group(1)), int(match.group(2)))
        if point.batch < 1 or point.seq < 2:
            raise AdaretError(f"bad profile shape {point}: batch must be >= 1 and sequence >= 2")
        points.append(point)
    if len(points) == 1:
        points *= 3
    if len(points) != 3:
        raise AdaretError(f"profiles take one shape or three (MIN,OPT,MAX), got {len(points)}: {text!r}")
    spec = ProfileSpec(*points)
    for axis in ("batch", "seq"):
        values = [getattr(p, axis) for p in spec.points]
        if values != sorted(values):
            raise AdaretError(f"profile {spec}: {axis} must not decrease from MIN to OPT to MAX")
    return spec


def bucket_for(seq: int, seq_lens: Sequence[int]) -> int:
    """The smallest bucket that holds ``seq`` tokens: the engine a request of that length runs on."""
    return smallest_width(seq_lens, seq)


def profile_for_graph(dims: Mapping[str, Sequence[int | str]], spec: ProfileSpec | None = None, *,
                      static: bool = False) -> Profile:
    """The profile for one exported graph whose inputs are all ``[batch, seq]``: the sequence follows the graph
    (static-K), the batch follows ``spec`` unless the graph fixes it too. ``static`` (DLA) needs one shape."""
    batch_dim, seq_dim = _common_dims(dims)
    batches, notes = _batches(batch_dim, spec, static)
    seq_len, seq_notes = _seq(seq_dim, spec)
    ranges = {name: ShapeRange((batches[0], seq_len), (batches[1], seq_len), (batches[2], seq_len))
              for name in dims}
    return Profile(seq_len, ranges, tuple(notes + seq_notes))


def profiles_from_buckets(seq_lens: Sequence[int], input_names: Sequence[str], spec: ProfileSpec | None = None, *,
                          batch: int | None = None, static: bool = False) -> dict[int, Profile]:
    """One profile per static-K bucket, planned before export (``batch`` is the export's fixed batch, if any)."""
    if not seq_lens:
        raise AdaretError("give at least one sequence bucket")
    if spec is not None and spec.max.seq > max(seq_lens):
        raise AdaretError(f"profile MAX {spec.max} needs {spec.max.seq} tokens, but the largest bucket is "
                          f"{max(seq_lens)}: add a bucket (--seq-len ...,{spec.max.seq})")
    return {n: profile_for_graph({name: [batch if batch is not None else "batch", n] for name in input_names},
                                 spec, static=static)
            for n in sorted(set(seq_lens))}


def _common_dims(dims: Mapping[str, Sequence[int | str]]) -> tuple[int | str, int | str]:
    if not dims:
        raise AdaretError("the graph has no inputs to build a profile for")
    shapes = {tuple(shape) for shape in dims.values()}
    for name, shape in dims.items():
        if len(shape) != 2:
            raise AdaretError(f"input {name} has rank {len(shape)}; adaret graphs take [batch, sequence] inputs")
    if len({s[1] for s in shapes}) > 1 or len({s[0] for s in shapes}) > 1:
        raise AdaretError(f"inputs disagree on their shapes: {dict(dims)}")
    batch_dim, seq_dim = next(iter(shapes))
    return batch_dim, seq_dim


def _batches(batch_dim: int | str, spec: ProfileSpec | None, static: bool) -> tuple[tuple[int, int, int], list[str]]:
    if isinstance(batch_dim, int):
        if spec is not None and set(spec.batches) != {batch_dim}:
            raise AdaretError(f"the graph's batch is fixed at {batch_dim} (exported with --batch {batch_dim}), "
                              f"but the profile asks for batches {spec.batches}: drop --profiles or use "
                              f"{batch_dim}xN")
        return (batch_dim,) * 3, []
    if static:
        if spec is None:
            raise AdaretError("DLA engines need static shapes: give one shape (--profiles 8x512) or export with "
                              "--batch N")
        if len(set(spec.batches)) != 1:
            raise AdaretError(f"DLA engines need one shape, but the profile {spec} ranges over batches "
                              f"{spec.batches}: give one shape, e.g. --profiles {spec.opt}")
    return (spec.batches if spec is not None else DEFAULT_BATCHES), []


def _seq(seq_dim: int | str, spec: ProfileSpec | None) -> tuple[int, list[str]]:
    if not isinstance(seq_dim, int):
        if spec is None or spec.min.seq != spec.max.seq:
            raise AdaretError("the graph's sequence length is dynamic (K computed at run time); build from the "
                              "static-K export of one bucket (adaret export --static)")
        return spec.max.seq, []
    notes = []
    if spec is not None and spec.max.seq > seq_dim:
        notes.append(f"requests longer than {seq_dim} tokens need a larger bucket than this graph's")
    if spec is not None and spec.min.seq < seq_dim:
        notes.append(f"requests shorter than {seq_dim} tokens are padded up to {seq_dim}")
    return seq_dim, notes
