"""Training jobs on the data the pipeline made: SFT, a soft-label reward model, DPO, and
online RL (GRPO or RLOO) against the reward model.

`config.py` holds every option with its help text (the CLI and the studio read them from
there); `jobs.py` registers the job kinds; the heavy parts (torch, transformers, TRL) load
only inside a running job.
"""
