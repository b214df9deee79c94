"""What the TensorRT ONNX parser accepts, written down so that the readiness lint runs without TensorRT.

The operator table encodes the support matrix of the TensorRT 10.1 ONNX parser (onnx-tensorrt, 10.1-GA
release, ``docs/operators.md``): which operators import, for which tensor types, with which restrictions.
Later 10.x and 11.x parsers accept a superset of it, so a graph that passes here parses there too; the
opposite is not guaranteed, which is why an operator missing from the table is a blocker and not a guess.
Opset limits come from the same matrix (opset 9 to 20 for 10.x) and from the TensorRT 11.x ONNX opset
guide (maximum opset 25).
"""

from __future__ import annotations

PARSER_MATRIX_VERSION = "TensorRT 10.1 ONNX parser (onnx-tensorrt 10.1-GA operators.md)"
MIN_OPSET = 9
MAX_OPSET_10X = 20
MAX_OPSET_11X = 25
TOPK_MAX_K = 3840  # the matrix: "K input must be less than 3840"

# Tensor types by their ONNX names (onnx_ir.DataType member names).
_F = frozenset({"FLOAT", "FLOAT16", "BFLOAT16"})
_F32_16 = frozenset({"FLOAT", "FLOAT16"})
_FI = _F | {"INT32", "INT64"}
_FIB = _FI | {"BOOL"}
_FIBU = _FIB | {"UINT8"}
_FI8 = _FI | {"INT8"}
_FI_FP8 = _FI | {"FLOAT8E4M3FN"}
_B = frozenset({"BOOL"})
_QUANT = frozenset({"INT8", "FLOAT8E4M3FN", "INT4"})

_SUPPORTED_BY_TYPES: dict[frozenset[str], str] = {
    _FI: "Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Max Min Mod "
         "Mul Neg Pad Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin "
         "ReduceProd ReduceSum ReduceSumSquare Relu Scatter ScatterElements ScatterND Shrink Sign SpaceToDepth "
         "Sub Sum TopK",
    _F: "Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv ConvTranspose Cos "
        "Cosh CumSum Dropout Einsum Elu Erf Exp Floor GRU Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool "
        "GroupNormalization HardSigmoid HardSwish Hardmax ImageScaler InstanceNormalization IsInf LRN LSTM "
        "LayerNormalization LeakyRelu Log LogSoftmax LpNormalization LpPool MatMul MaxPool "
        "MeanVarianceNormalization PRelu ParametricSoftplus Pow QuantizeLinear RNN RandomNormal RandomNormalLike "
        "RandomUniform RandomUniformLike Reciprocal Resize Round ScaledTanh Scan Selu Sigmoid Sin Sinh Softmax "
        "Softplus Softsign Sqrt Tan Tanh ThresholdedRelu Upsample",
    _B: "And Not Or Xor",
    _FIBU: "Cast CastLike",
    _FIB: "Concat Constant ConstantOfShape Expand EyeLike Flatten Gather GatherElements GatherND Identity If Loop "
          "OneHot Reshape ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze Where",
    _F32_16: "DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign",
    _QUANT: "DequantizeLinear",
    _FI8: "Gelu",
    _FI_FP8: "Mean",
}

#: operator -> tensor types the parser imports it for
SUPPORTED_OPS: dict[str, frozenset[str]] = {
    op: types for types, names in _SUPPORTED_BY_TYPES.items() for op in names.split()
}

_UNSUPPORTED_NAMES = (
    "AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow CenterCropPad Col2Im "
    "Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear HammingWindow HannWindow ImageDecoder "
    "MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional "
    "OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch STFT SequenceAt "
    "SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap "
    "SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique"
)
#: operators the matrix lists as not supported
UNSUPPORTED_OPS: frozenset[str] = frozenset(_UNSUPPORTED_NAMES.split())

#: every tensor type the parser knows; DOUBLE is cast down to FLOAT (with clamping), UINT8 only at graph I/O
PARSER_TYPES = frozenset({"FLOAT", "FLOAT16", "BFLOAT16", "INT32", "INT64", "INT8", "INT4", "UINT8", "BOOL",
                          "FLOAT8E4M3FN", "DOUBLE"})

#: output shape depends on tensor values, not on input shapes: TensorRT needs an output allocator and DLA
#: cannot run them, and our fixed-size runtime buffers cannot hold them
DATA_DEPENDENT_SHAPE_OPS = frozenset({"NonZero", "NonMaxSuppression", "Unique", "Compress"})

#: (op, input index) pairs whose *values* define an output shape; a value computed from data makes the shape
#: data-dependent, one computed from input shapes keeps it a shape tensor
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "ConstantOfShape": (0,), "Tile": (1,), "Range": (0, 1, 2),
    "Slice": (1, 2, 4), "Resize": (2, 3), "Pad": (1,), "OneHot": (1,), "TopK": (1,),
}

#: (op, input index) pairs the parser requires to be initializers or constants
CONSTANT_INPUTS: dict[str, tuple[int, ...]] = {
    **{op: (1,) for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                           "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Squeeze", "Unsqueeze",
                           "CumSum")},
    "Slice": (3,), "Pad": (3,), "Dropout": (2,),
}

#: ops with no layer in the DLA supported-layer list of the TensorRT 10.x developer guide: with GPU_FALLBACK
#: they run on the GPU, and each DLA<->GPU hand-over costs a reformat and a sync
DLA_GPU_ONLY_OPS = frozenset({"TopK", "Gather", "GatherElements", "GatherND", "NonZero", "Cast", "Range",
                              "Where", "CumSum", "ScatterElements", "ScatterND"})

