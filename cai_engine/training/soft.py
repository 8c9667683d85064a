"""Soft preference labels for TRL's reward and DPO trainers.

No TRL trainer takes a per-example preference probability. With a soft target p (the
probability that `chosen` is better) and a reward margin Δ, the loss is the cross-entropy

    L(Δ, p) = -(p·logσ(Δ) + (1 - p)·logσ(-Δ)),

which is TRL's `-logσ(Δ)` when p = 1. Since logσ(-Δ) = logσ(Δ) - Δ, this is
`-logσ(Δ) + (1 - p)·Δ`: TRL's hard loss plus a term that pulls Δ back towards the margin the
label supports. The trainers below keep TRL's forward, metrics and everything else, and
replace only the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from trl import DPOTrainer, RewardTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference as DPOCollator
from trl.trainer.reward_trainer import DataCollatorForPreference as RewardCollator


def soft_preference_loss(delta: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Mean of -(p·logσ(Δ) + (1-p)·logσ(-Δ)) over the batch."""
    p = p.to(delta.dtype)
    return -(p * F.logsigmoid(delta) + (1 - p) * F.logsigmoid(-delta)).mean()


class _ScoreColumn:
    """Mixin for collators: pass each example's `score` through as a float tensor."""

    def torch_call(self, examples):
        out = super().torch_call(examples)
        if "score" in examples[0]:
            out["score"] = torch.tensor([float(e["score"]) for e in examples], dtype=torch.float)
        return out


class RewardScoreCollator(_ScoreColumn, RewardCollator):
    pass


class DPOScoreCollator(_ScoreColumn, DPOCollator):
    pass


class _KeepScore:
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "score" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "score"]


class SoftRewardTrainer(_KeepScore, RewardTrainer):
    """RewardTrainer whose loss is the soft-label cross-entropy of the reward margin."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        p = inputs.pop("score", None)
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if p is not None:
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            loss = soft_preference_loss(chosen - rejected, p.to(chosen.device))
            if self.args.center_rewards_coefficient is not None:
                loss = loss + self.args.center_rewards_coefficient * torch.mean(
                    (chosen + rejected) ** 2
                )
        return (loss, outputs) if return_outputs else loss


class SoftDPOTrainer(_KeepScore, DPOTrainer):
    """DPOTrainer (sigmoid loss) with each pair's soft label p applied to the DPO logits.

    Needs `precompute_ref_log_probs=True`, so the reference log-probabilities are in the
    batch: the margin x = β·((π_c - ref_c) - (π_r - ref_r)) is rebuilt from the policy's
    per-token log-probabilities exactly as TRL sums them, and (1 - p)·x is added to TRL's loss.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        unsupported = []
        if list(self.loss_types) != ["sigmoid"]:
            unsupported.append(f"loss_type {self.loss_types}")
        if self.f_divergence_type != "reverse_kl":
            unsupported.append(f"f_divergence_type {self.f_divergence_type}")
        if self.ld_alpha is not None or self.use_weighting or self.aux_loss_enabled:
            unsupported.append("ld_alpha, use_weighting or an aux loss")
        if not self.precompute_ref_logps:
            unsupported.append("precompute_ref_log_probs=False")
        if unsupported:
            raise ValueError(
                "soft-label DPO supports the plain sigmoid loss only: " + ", ".join(unsupported)
            )

    def _compute_loss(self, model, inputs, return_outputs):
        p = inputs.pop("score", None)
        if p is None:
            return super()._compute_loss(model, inputs, return_outputs)
        captured = {}

        def keep_policy_logps(module, args, kwargs, output):
            # TRL's policy forward is the first call, with labels: its per-token log-probs
            # (masked to the completions) carry the gradient
            if "log_probs" not in captured and getattr(output, "log_probs", None) is not None:
                captured["log_probs"] = output.log_probs

        handle = model.register_forward_hook(keep_policy_logps, with_kwargs=True)
        try:
            loss = super()._compute_loss(model, inputs, return_outputs=False)
        finally:
            handle.remove()
        seq_len = inputs["completion_mask"].size(1) - 1
        logps = captured["log_probs"][:, -seq_len:].sum(dim=1)
        chosen, rejected = logps.chunk(2, dim=0)
        x = self.beta * (
            (chosen - inputs["ref_chosen_logps"].to(chosen.dtype))
            - (rejected - inputs["ref_rejected_logps"].to(chosen.dtype))
        )
        loss = loss + ((1 - p.to(x.device, x.dtype)) * x).mean()
        if return_outputs:
            with torch.no_grad():
                outputs = model(
                    input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
                )
            return loss, outputs
        return loss
