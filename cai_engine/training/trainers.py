"""TRL trainers configured for our jobs: SFT, reward and DPO (GRPO/RLOO are in `rl.py`).

Each `build_<kind>` is named by its kind's `TrainingKind.build`.
"""

from __future__ import annotations

import torch
import transformers
import trl

from cai_engine.training.kinds import TRAINING_KINDS
from cai_engine.training.soft import (
    DPOScoreCollator,
    RewardScoreCollator,
    SoftDPOTrainer,
    SoftRewardTrainer,
)


def _without(dataset, *columns):
    if dataset is None:
        return None
    drop = [c for c in columns if c in dataset.column_names]
    return dataset.remove_columns(drop) if drop else dataset


def build(
    kind, config, *, base_path, tokenizer, train, evals, common, max_length, peft_config, home
):
    """The TRL trainer for `kind`, from its registry entry's builder."""
    spec = TRAINING_KINDS[kind]
    return spec.builder()(
        spec,
        config,
        base_path=base_path,
        tokenizer=tokenizer,
        train=train,
        evals=evals,
        common=common,
        max_length=max_length,
        peft_config=peft_config,
        home=home,
    )


def load_model(spec, base_path, num_labels: int | None = None):
    """The base model as the kind's model class, in fp32 (bf16 is autocast, as TRL does it).
    Every option is spelt out: the secure-defaults scan refuses a hidden trust_remote_code."""
    model_class = getattr(transformers, spec.model_class)
    if num_labels is None:
        return model_class.from_pretrained(base_path, dtype=torch.float32)
    return model_class.from_pretrained(base_path, dtype=torch.float32, num_labels=num_labels)


def build_sft(
    spec, config, *, base_path, tokenizer, train, evals, common, max_length, peft_config, **_
):
    model = load_model(spec, base_path)
    args = trl.SFTConfig(**common, max_length=max_length, completion_only_loss=True)
    return trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evals,
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def build_reward(
    spec, config, *, base_path, tokenizer, train, evals, common, max_length, peft_config, **_
):
    model = load_model(spec, base_path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = trl.RewardConfig(
        **common, max_length=max_length, center_rewards_coefficient=config.center_rewards
    )
    soft = (SoftRewardTrainer, RewardScoreCollator(pad_token_id=tokenizer.pad_token_id))
    return _preference_trainer(
        trl.RewardTrainer, soft, config, model, args, tokenizer, train, evals, peft_config
    )


def build_dpo(
    spec, config, *, base_path, tokenizer, train, evals, common, max_length, peft_config, **_
):
    model = load_model(spec, base_path)
    args = trl.DPOConfig(
        **common,
        beta=config.beta,
        max_length=max_length,
        precompute_ref_log_probs=config.soft_labels,
    )
    soft = (
        SoftDPOTrainer,
        DPOScoreCollator(pad_token_id=tokenizer.pad_token_id, max_length=max_length),
    )
    return _preference_trainer(
        trl.DPOTrainer, soft, config, model, args, tokenizer, train, evals, peft_config
    )


def _preference_trainer(hard_cls, soft, config, model, args, tokenizer, train, evals, peft):
    """TRL's trainer on hard labels, or our subclass that reads each pair's `score`."""
    if config.soft_labels:
        soft_cls, collator = soft
        return soft_cls(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=evals,
            processing_class=tokenizer,
            peft_config=peft,
            data_collator=collator,
        )
    return hard_cls(
        model=model,
        args=args,
        train_dataset=_without(train, "score"),
        eval_dataset=_without(evals, "score"),
        processing_class=tokenizer,
        peft_config=peft,
    )


def evaluate(trainer) -> dict:
    """Held-out metrics (eval_ prefix): loss, and reward or DPO accuracy and margins."""
    metrics = trainer.evaluate()
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def pair_accuracy(trainer, tokenizer, rows: list[dict]) -> tuple[float, int]:
    """(share of pairs whose chosen response gets the higher reward, pairs) for a reward model."""
    model = trainer.model
    model.eval()
    device = next(model.parameters()).device
    hits = 0
    with torch.inference_mode():
        for r in rows:
            scores = []
            for side in ("chosen", "rejected"):
                ids = tokenizer.apply_chat_template(
                    r["prompt"] + r[side], return_tensors="pt", return_dict=True
                ).to(device)
                scores.append(float(model(**ids).logits.squeeze()))
            hits += scores[0] > scores[1]
    return (hits / len(rows) if rows else 0.0), len(rows)


def human_accuracy(trainer, tokenizer, eval_rows: list[dict], human_rows: list[dict]) -> dict:
    """A reward model's accuracy on held-out AI labels and, separately, on the human-reviewed
    pairs (which are always held out of training)."""
    out = {}
    for name, rows in (("ai_heldout", eval_rows), ("human", human_rows)):
        if rows:
            acc, n = pair_accuracy(trainer, tokenizer, rows)
            out[f"{name}_accuracy"], out[f"{name}_pairs"] = acc, n
    return out
