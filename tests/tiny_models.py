"""Tiny random models with a WordPiece vocabulary made from the test data: fast, no network."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
DATA_DIR = Path(__file__).parent / "data"


def corpus_texts(folders: Iterable[Path] = ()) -> list[str]:
    texts = []
    for folder in folders or sorted(p for p in DATA_DIR.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.csv")):
            with path.open(newline="", encoding="utf-8") as handle:
                texts.extend(row["text"] for row in csv.DictReader(handle, delimiter="\t"))
    return texts


def write_vocab(path: Path, texts: Iterable[str], lowercase: bool = True, max_words: int = 3000) -> None:
    """Whole frequent words plus every character as a start and a continuation piece."""
    words: Counter[str] = Counter()
    chars: set[str] = set()
    for text in texts:
        for word in text.split():
            word = word.lower() if lowercase else word
            words[word] += 1
            chars.update(word)
    pieces = sorted(chars) + [f"##{c}" for c in sorted(chars)]
    vocab = SPECIALS + pieces + [w for w, _ in words.most_common(max_words) if w not in pieces]
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")


def make_tokenizer(folder: Path, texts: Iterable[str] | None = None):
    from transformers import BertTokenizer  # transformers 5: the fast (Rust) tokenizer, built from `vocab`

    folder.mkdir(parents=True, exist_ok=True)
    write_vocab(folder / "vocab.txt", corpus_texts() if texts is None else texts)
    tokenizer = BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    return tokenizer


def make_gpt2_model(folder: Path, positions: int = 128) -> Path:
    """A decoder-only backbone like GPT-2's: byte-level BPE, and no padding token (as the real one)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus_texts(), trainer)
    end = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=end, eos_token=end, unk_token=end)
    tokenizer.save_pretrained(folder)
    end_id = tokenizer.convert_tokens_to_ids(end)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=positions,
        bos_token_id=end_id, eos_token_id=end_id,
    )  # fmt: skip
    GPT2Model(config).save_pretrained(folder)
    return folder


def tiny_dimensions(vocab_size: int, max_position_embeddings: int) -> dict[str, int]:
    """A BERT-shaped config small enough to train in seconds."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": max_position_embeddings,
    }


def make_base_model(folder: Path, kind: str = "bert", max_position_embeddings: int = 128) -> Path:
    """A pretrained-style backbone folder (no task head) that ``train`` can fine-tune."""
    import torch
    from transformers import BertConfig, BertModel, LayoutLMConfig, LayoutLMModel

    torch.manual_seed(0)
    if kind == "gpt2":
        return make_gpt2_model(folder, max_position_embeddings)
    tokenizer = make_tokenizer(folder)
    common = tiny_dimensions(len(tokenizer), max_position_embeddings)
    if kind == "bert":
        model = BertModel(BertConfig(**common))
    elif kind == "layoutlm":
        model = LayoutLMModel(LayoutLMConfig(**common, max_2d_position_embeddings=1024))
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    return folder


NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
CLASS_LABELS = ["negative", "neutral", "positive"]
PLAIN_TASKS = ("ner", "classif", "multilabel-classif", "regression", "ner-layoutlm")


def make_plain_model(
    folder: Path, task: str, max_position_embeddings: int = 128, safe_serialization: bool = True
) -> Path:
    """A classifier folder as plain ``transformers`` saves it (``save_pretrained``, no ``hfsm.json``):
    what a model.tar.gz made for the Hugging Face inference DLC holds. Random weights, fixed seed."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertForTokenClassification,
        LayoutLMConfig,
        LayoutLMForTokenClassification,
    )

    torch.manual_seed(0)
    tokenizer = make_tokenizer(folder)
    labels = NER_LABELS if task.startswith("ner") else CLASS_LABELS
    head: dict = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    if task == "multilabel-classif":
        head["problem_type"] = "multi_label_classification"
    if task == "regression":
        head = {"num_labels": 1}
    common = {**tiny_dimensions(len(tokenizer), max_position_embeddings), **head}
    if task == "ner-layoutlm":
        model = LayoutLMForTokenClassification(LayoutLMConfig(**common, max_2d_position_embeddings=1024))
    elif task == "ner":
        model = BertForTokenClassification(BertConfig(**common))
    else:
        model = BertForSequenceClassification(BertConfig(**common))
    model.save_pretrained(folder)
    if not safe_serialization:  # transformers 5 writes safetensors only: the pickle older versions wrote
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    return folder
