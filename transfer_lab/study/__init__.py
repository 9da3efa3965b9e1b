"""Study stage: one job of a sweep, the record it leaves, and the sweep around it.

    job.py            one job: typed settings in, a trained run and its record out
    job_settings.py   the Hydra config read once, at the job's edge, into small typed specs
    pretraining.py    the cached pre-trained model a fine-tune starts from (trained once, locked)
    training_run.py   one training run and the record it fills
    records.py        results.json: the self-describing record of a run
    keys.py           run keys (what defines a run) and lineages (a run however far it was trained)
    lineage.py        reuse and extension of runs across sweeps
    protocol.py       which runs a study needs: the cells of a multirun
    validate.py       config checks before any data is built
    launch_checks.py  command-line checks before Hydra runs (one line, exit 2)
    devices.py        one job per device: devices > 1 refused, each worker's device slot
    tracking.py       Weights & Biases
    outcomes.py       what a job returns, and the summary line a launch prints
"""
