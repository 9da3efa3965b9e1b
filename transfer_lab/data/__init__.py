"""Data stage: corpus → prepared text → tokenizer → token file → DataModule.

    corpora/       corpus specs (conf/data/corpus/*.yaml) and the prepared, split, shuffled text
    tokenizers.py  GPT-2 BPE, raw bytes, or a BPE learned on the source
    token_files.py each (prepared corpus, tokenizer) tokenised once into memory-mapped ids
    run_data.py    the one place that chains them for a run: corpus names in, token files out
    datamodule.py  packed n_ctx blocks: the training subset and the fixed validation set
"""
