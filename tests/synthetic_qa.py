"""A synthetic question-answering graph whose right answer is known, with the packaged tokenizer beside it.

The graph scores a start at every "santa" token and an end at every "clara" token (plus one for each context
token, read from token_type_ids, and one for each real token), so the best span in any context is "Santa Clara"
wherever it lies, whichever window holds it. Used by the runtime and the serving tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
from onnx import TensorProto, helper
from tokenizers import Tokenizer

import adaret
from adaret.core.metadata import ExportMetadata

PRETRAINED = next((Path(adaret.__file__).parent / "pretrained").glob("*/tokenizer.json")).parent
TOKENIZER = Tokenizer.from_file(str(PRETRAINED / "tokenizer.json"))
SANTA, CLARA = TOKENIZER.token_to_id("santa"), TOKENIZER.token_to_id("clara")
QA = {"max_length": 64, "doc_stride": 16, "max_query_length": 16, "max_answer_length": 10}
SHORT = "Super Bowl 50 was played at Levi's Stadium in Santa Clara, California."
LONG = " ".join(["The stadium hosted many events over the years in the bay area."] * 12
                + ["The final was held in Santa Clara that winter."]
                + ["Fans travelled from far away to watch the teams play."] * 6)
QUESTION = "Where was the game played?"


def qa_graph(width: int | None, bonus: float = 0.0, token_types: bool = True) -> onnx.ModelProto:
    """start = 10 * [id == santa] + mask + type + bonus, end = 10 * [id == clara] + mask + type."""
    dims = ["batch", width or "sequence"]
    names = ["input_ids", "attention_mask", *(["token_type_ids"] if token_types else [])]
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, dims) for name in names]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name in ("start_logits", "end_logits")]
    consts = [helper.make_tensor(name, kind, [], [value]) for name, kind, value in (
        ("santa", TensorProto.INT64, SANTA), ("clara", TensorProto.INT64, CLARA),
        ("ten", TensorProto.FLOAT, 10.0), ("bonus", TensorProto.FLOAT, bonus))]
    nodes = [helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT)]
    if token_types:
        nodes += [helper.make_node("Cast", ["token_type_ids"], ["types_f"], to=TensorProto.FLOAT),
                  helper.make_node("Add", ["mask_f", "types_f"], ["base"])]
    else:
        nodes += [helper.make_node("Identity", ["mask_f"], ["base"])]
    for target, output, extra in (("santa", "start_logits", "bonus"), ("clara", "end_logits", None)):
        nodes += [helper.make_node("Equal", ["input_ids", target], [f"{target}_hit"]),
                  helper.make_node("Cast", [f"{target}_hit"], [f"{target}_f"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [f"{target}_f", "ten"], [f"{target}_ten"]),
                  helper.make_node("Add", [f"{target}_ten", "base"], [f"{target}_sum" if extra else output])]
        if extra:
            nodes.append(helper.make_node("Add", [f"{target}_sum", extra], [output]))
    graph = helper.make_graph(nodes, "qa", inputs, outputs, initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    metadata = ExportMetadata(form="static" if width else "dynamic", budget=1.0, seq_len=width,
                              task="question-answering", question_answering=dict(QA), input_names=names,
                              output_names=["start_logits", "end_logits"])
    metadata.write_to(model)
    onnx.checker.check_model(model)
    return model


def with_tokenizer(directory: Path) -> Path:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(PRETRAINED / name, directory / name)
    return directory
