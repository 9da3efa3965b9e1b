import json

import numpy as np
import pytest

from transfer_lab.data.corpora import load_corpus_spec, prepare_corpus
from transfer_lab.data.token_files import load_token_file
from transfer_lab.data.tokenizers import load_tokenizer
from transfer_lab.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def code_corpus(data_dir):
    return prepare_corpus(load_corpus_spec("python_small"), data_dir=data_dir)


def test_gpt2_tokenizer_is_offline_and_matches_openai_ids(tmp_path):
    handle = load_tokenizer({"kind": "gpt2"}, tmp_path)
    assert handle.tokenizer.encode("Hello world").ids == [15496, 995]
    assert handle.vocab_size == 50257 and handle.eos_id == 50256


def test_byte_tokenizer_round_trips_any_utf8(tmp_path):
    handle = load_tokenizer({"kind": "byte"}, tmp_path)
    text = "Grüße, 中文, emoji 🙂"
    ids = handle.tokenizer.encode(text).ids
    assert len(ids) == len(text.encode("utf-8")) and handle.vocab_size == 257
    assert handle.tokenizer.decode(ids) == text


def test_bpe_is_learned_once_and_cached(tmp_path, code_corpus):
    spec = {"kind": "bpe", "vocab_size": 300, "train_chars": 1e5}
    calls = []

    def docs():
        calls.append(1)
        return code_corpus.documents("train")

    first = load_tokenizer(spec, tmp_path, training_documents=docs, training_corpus_hash="x")
    second = load_tokenizer(spec, tmp_path, training_documents=docs, training_corpus_hash="x")
    assert first.id == second.id and first.vocab_size == 300 and len(calls) == 1
    with pytest.raises(ConfigError, match="vocab_size"):
        load_tokenizer({"kind": "bpe", "vocab_size": 100}, tmp_path, training_documents=docs)
    with pytest.raises(ConfigError, match="unknown"):
        load_tokenizer({"kind": "wordpiece"}, tmp_path)


def test_token_file_maps_characters_to_exact_token_prefixes(tmp_path, code_corpus):
    handle = load_tokenizer({"kind": "byte"}, tmp_path)
    tokens = load_token_file(code_corpus, handle, tmp_path, log=lambda *_: None)
    train = tokens.train
    assert train.n_chars == code_corpus.train_chars and tokens.val.n_chars == code_corpus.val_chars
    assert np.all(np.diff(train.char_ends) >= 0)
    # ASCII-heavy code: a byte tokenizer spends about one token per character
    assert 0.9 < len(train) / train.n_chars < 1.2
    for chars in (1000, 12345, 100000):
        n = train.tokens_for_chars(chars)
        assert abs(train.chars_in(n) - chars) <= 4  # nearest token boundary (a UTF-8 char is ≤ 4 bytes)
    assert train.tokens_for_chars(1000) < train.tokens_for_chars(100000)  # nested prefixes
    # the first document's text decodes back from its token range
    first_doc = next(code_corpus.documents("train"))
    n_first = train.tokens_for_chars(len(first_doc))
    assert handle.tokenizer.decode(train.tokens[:n_first].tolist()) == first_doc


def test_token_file_is_reused_and_truncation_is_detected(tmp_path, code_corpus):
    handle = load_tokenizer({"kind": "byte"}, tmp_path)
    first = load_token_file(code_corpus, handle, tmp_path, log=lambda *_: None)
    meta_before = (first.directory / "meta.json").stat().st_mtime_ns
    again = load_token_file(code_corpus, handle, tmp_path, log=lambda *_: None)
    assert (again.directory / "meta.json").stat().st_mtime_ns == meta_before
    path = first.directory / "train.tokens.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        load_token_file(code_corpus, handle, tmp_path, log=lambda *_: None)
    meta = json.loads((first.directory / "meta.json").read_text())
    assert meta["mb_per_s"] > 0
