#!/bin/sh
# written by `python analyze.py action=mix paths.report_dir=docs/results/mix`: held-out runs (experiment=mix_verify) that test its predictions
set -e
"${PYTHON:-python}" train.py -m experiment=mix_verify model.n_layer=1 model.n_embd=32 model.n_head=2 'data.source=code_nonpython,{english:0.25,code_nonpython:0.7,german:0.05},{english:0.75,code_nonpython:0.25},{english:0.2,code_nonpython:0.05,german:0.75},english,german'
