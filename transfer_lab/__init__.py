"""transfer_lab: how much is pre-training worth, in characters of your own data?

Data flows one way through the modules of this package:
corpora → tokenization/tokens → datamodule → module (+ model) → records → analysis.
"""

__version__ = "0.1.0"
