"""Training stage: a GPT-2 of a given shape trained on a DataModule until its schedule stops it.

    model.py             GPT2Config shapes and the parameter counts the laws are written in (N)
    lightning_module.py  the LightningModule (AdamW, warm-up, LR scale the plateau rule lowers)
    schedule.py          a run's schedule and stopping rule, sized to its own subset
    callbacks.py         the run recorder, the plateau rule, atomic checkpoints
    fit.py               one resumable Lightning fit, scored at its early-stopping point
    run_files.py         the names of what a fit leaves in its run folder
"""
