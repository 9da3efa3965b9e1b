"""What a fit leaves in its run folder (light: the analysis reads these names without torch)."""

METRICS_FILE = "metrics.jsonl"  # one JSON object per logged point: train and validation curves
CHECKPOINT_DIR = "checkpoints"  # last.ckpt (resume point) and best.ckpt (early-stopping point) while unfinished
