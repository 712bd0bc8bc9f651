"""An ONNX export's tokenizer without ``transformers``: its Rust tokenizer, called as ``transformers`` does.

Why: importing ``transformers`` imports torch and most of its own machinery (about 6 s of a worker's
start on a 2-core machine), and the ONNX Runtime path needs neither. ``transformers``' fast
tokenizers are a thin layer over a ``tokenizers.Tokenizer``; the export saves that exact object
(``backend_tokenizer``, as configured once loaded: normalizer, pre-tokenizer with any
``add_prefix_space``, post-processor adding the special tokens) together with the few attributes
our code reads (:class:`TokenizerSpec`). :class:`ExportedTokenizer` then answers the calls the
predictor makes (``is_split_into_words`` batches for NER, truncated texts for the other tasks) as
``transformers`` would; the export compares the two on probe inputs and refuses to write a
tokenizer that differs (:func:`hfsm.inference.onnx_export.check_tokenizer`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class TokenizerSpec:
    """What our code reads from a ``transformers`` tokenizer besides its Rust tokenizer."""

    unk_token_id: int | None
    pad_token_id: int | None
    model_input_names: tuple[str, ...]
    model_max_length: int
    truncation_side: str = "right"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TokenizerSpec:
        return cls(
            unk_token_id=data["unk_token_id"],
            pad_token_id=data["pad_token_id"],
            model_input_names=tuple(data["model_input_names"]),
            model_max_length=int(data["model_max_length"]),
            truncation_side=data.get("truncation_side", "right"),
        )

    @classmethod
    def of(cls, tokenizer: Any) -> TokenizerSpec:
        """The spec of a loaded ``transformers`` tokenizer."""
        max_length = int(tokenizer.model_max_length)
        return cls(
            unk_token_id=tokenizer.unk_token_id,
            pad_token_id=tokenizer.pad_token_id,
            model_input_names=tuple(tokenizer.model_input_names),
            model_max_length=min(max_length, 1 << 30),  # "no limit" is a huge float-like int
            truncation_side=getattr(tokenizer, "truncation_side", "right"),
        )


class Encoded(Mapping[str, Any]):
    """``transformers``' ``BatchEncoding`` as far as we use it: keys to lists, and word ids per row."""

    def __init__(self, data: dict[str, Any], word_ids: list[list[int | None]]) -> None:
        self._data = data
        self._word_ids = word_ids

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        return self._word_ids[batch_index]


class ExportedTokenizer:
    """A ``tokenizers.Tokenizer`` answering ``tokenizer(...)`` calls the way ``transformers`` does.

    Thread-safe: truncation is a setting of the Rust tokenizer, changed per call under a lock.
    """

    def __init__(self, backend: Any, spec: TokenizerSpec) -> None:
        self.backend = backend
        self.spec = spec
        self.unk_token_id = spec.unk_token_id
        self.pad_token_id = spec.pad_token_id
        self.model_input_names = list(spec.model_input_names)
        self.model_max_length = spec.model_max_length
        self._lock = threading.Lock()
        backend.no_padding()

    @classmethod
    def load(cls, folder: Path, spec: TokenizerSpec) -> ExportedTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(folder / TOKENIZER_FILE)), spec)

    def __call__(
        self,
        text: str | Sequence[str] | Sequence[Sequence[str]],
        *,
        is_split_into_words: bool = False,
        add_special_tokens: bool = True,
        truncation: bool = False,
        max_length: int | None = None,
        return_attention_mask: bool | None = None,
        return_token_type_ids: bool | None = None,
    ) -> Encoded:
        single = isinstance(text, str)
        if is_split_into_words and (single or any(isinstance(words, str) for words in text)):
            raise TypeError("is_split_into_words=True takes a batch: a list of lists of words")
        batch = [text] if single else list(text)
        with self._lock:
            if truncation:
                self.backend.enable_truncation(
                    max_length=max_length or self.model_max_length,
                    stride=0,
                    strategy="longest_first",
                    direction=self.spec.truncation_side,
                )
            else:
                self.backend.no_truncation()
            encodings = self.backend.encode_batch(
                batch, is_pretokenized=is_split_into_words, add_special_tokens=add_special_tokens
            )
        names = self.model_input_names
        data: dict[str, Any] = {"input_ids": [e.ids for e in encodings]}
        if return_token_type_ids is not False and "token_type_ids" in names:
            data["token_type_ids"] = [e.type_ids for e in encodings]
        if return_attention_mask is not False and "attention_mask" in names:
            data["attention_mask"] = [e.attention_mask for e in encodings]
        word_ids = [list(e.word_ids) for e in encodings]
        if single:
            data = {key: rows[0] for key, rows in data.items()}
        return Encoded(data, word_ids)
