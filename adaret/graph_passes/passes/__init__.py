"""The graph passes, one module each (`pipeline.TARGET_PASSES` gives the order a target runs them in)."""

from adaret.graph_passes.passes.cleanup import CleanupPass
from adaret.graph_passes.passes.float16 import Float16Pass
from adaret.graph_passes.passes.fold_constants import FoldConstantsPass
from adaret.graph_passes.passes.last_layer_pruning import LastLayerPruningPass
from adaret.graph_passes.passes.order_restore import OrderRestoreEliminationPass
from adaret.graph_passes.passes.ort_fusions import TransformerFusionPass
from adaret.graph_passes.passes.packed_attention import PackedAttentionPass
from adaret.graph_passes.passes.row_gather import RowGatherPass
from adaret.graph_passes.passes.row_scatter import RowScatterPass
from adaret.graph_passes.passes.split_skip_layernorm import SplitSkipLayerNormPass

__all__ = ["ALL_PASSES", "CleanupPass", "Float16Pass", "FoldConstantsPass", "LastLayerPruningPass",
           "OrderRestoreEliminationPass", "PackedAttentionPass", "RowGatherPass", "RowScatterPass",
           "SplitSkipLayerNormPass", "TransformerFusionPass"]

# The passes ``adaret optimize --passes`` can name, in the order its messages list them.
ALL_PASSES = (FoldConstantsPass, CleanupPass, TransformerFusionPass, OrderRestoreEliminationPass, LastLayerPruningPass,
              PackedAttentionPass, RowGatherPass, RowScatterPass, SplitSkipLayerNormPass, Float16Pass)
