"""What differs between model architectures, as far as training and serving care.

Plain data, read from a ``config.json`` (a dict) or a ``transformers`` config object alike, so that
``serve`` can describe a model folder without importing ``transformers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Byte-level BPE tokenizers need a leading space per word when words are fed pre-split.
PREFIX_SPACE_MODEL_TYPES = {"roberta", "longformer", "bart", "gpt2", "deberta", "lilt", "layoutlmv3"}
# Architectures whose forward pass takes word boxes without page images.
BBOX_MODEL_TYPES = {"layoutlm", "lilt"}
# Architectures that number positions from padding_idx + 1 (fairseq's convention), so that a model
# with max_position_embeddings 514 takes 512 sub-tokens.
OFFSET_POSITION_MODEL_TYPES = {
    "roberta", "xlm-roberta", "xlm-roberta-xl", "roberta-prelayernorm", "camembert", "longformer",
    "mpnet", "data2vec-text", "luke", "lilt", "layoutlmv3", "ibert", "xmod",
}  # fmt: skip


def config_value(config: Any, name: str, default: Any = None) -> Any:
    """``config[name]`` of a parsed ``config.json``, or the attribute of a ``PretrainedConfig``."""
    if isinstance(config, Mapping):
        return config.get(name, default)
    return getattr(config, name, default)


def usable_positions(config: Any) -> int | None:
    """The longest input the model's position embeddings cover; None where positions are relative
    only (DeBERTa-v2/v3 with ``position_biased_input=false``) or the config does not say."""
    if not config_value(config, "position_biased_input", True):
        return None
    positions = config_value(config, "max_position_embeddings")
    if not isinstance(positions, int) or isinstance(positions, bool) or positions <= 0:
        positions = config_value(config, "n_positions")  # GPT-2's name for it
    if not isinstance(positions, int) or isinstance(positions, bool) or positions <= 0:
        return None
    if config_value(config, "model_type") in OFFSET_POSITION_MODEL_TYPES:
        pad = config_value(config, "pad_token_id")
        positions -= (1 if pad is None else pad) + 1
    return positions
