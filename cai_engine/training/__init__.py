"""Training jobs on the data the pipeline made: SFT, a soft-label reward model, DPO, and
online RL (GRPO or RLOO) against the reward model.

`kinds.py` registers one `TrainingKind` per trainer (its options, data format, model and
trainer builder, charts and studio label); `config.py` holds every option with its help
text (the CLI and the studio read them from there); `data.py` holds the data formats;
`jobs.py` turns the kinds into job kinds. The heavy parts (torch, transformers, TRL) load
only inside a running job.
"""
