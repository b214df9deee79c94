"""Summary text from WordPiece tokens: the spacing a reader expects around punctuation and English contractions.

WordPiece splits "blair's" into ``blair ' s``, and the ``tokenizers`` decoder joins the pieces with spaces
("blair ' s"); its own clean-up handles " ." and " ," but not apostrophes. transformers' ``clean_up_tokenization``
has the rules below, but the torch-free runtime cannot import transformers, and training and runtime must turn the
same tokens into the same text. So this one function, used by both, applies the same rules in the same order.
Like transformers' rules, it writes "5.3" as "5. 3": the tokens of "5.3" and of "5. 3" are the same, so which one
the text had is lost.
"""

from __future__ import annotations

# (what the decoder writes, what a reader expects), applied in order: " ' " first, so "isn ' t" becomes "isn't"
SPACING_RULES = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_spacing(text: str) -> str:
    """``text`` with the space before punctuation and around contraction apostrophes removed."""
    for written, expected in SPACING_RULES:
        text = text.replace(written, expected)
    return text
