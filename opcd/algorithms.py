"""What an algorithm means, in one place: who samples, which loss, what the teacher returns, whether it trains.

Every method (``conf/algo/*.yaml``) is one :class:`AlgoSpec`, built from its config by
:func:`algo_spec`. The loop, the learner and the teacher read the spec; nothing else branches on
``algo.name`` (which is only a label for runs and reports).

Sampler and loss, per method (the YAML files set ``sampler`` / ``trains`` / ``loss``):

| method       | sampler                 | loss               | teacher returns   | trains |
|--------------|-------------------------|--------------------|-------------------|--------|
| opcd         | student (no context)    | topk_reverse_kl    | student_topk      | yes    |
| opcd_nca     | student                 | + consistency term | student_topk      | yes    |
| offpolicy_cd | teacher (with context)  | forward_kl         | topk (teacher's)  | yes    |
| sft          | teacher                 | nll                | topk (unused)     | yes    |
| gkd          | mix (gkd_lambda)        | jsd                | full              | yes    |
| icl          | student                 | --                 | --                | no     |
"""
from __future__ import annotations

from dataclasses import dataclass

from opcd.consistency import check_nca_options

# Which support the teacher must score for each loss (see opcd.teacher.scoring.score_responses).
TEACHER_SUPPORT = {
    "topk_reverse_kl": "student_topk",  # OPCD: the student's own top-k from the rollout
    "full_reverse_kl": "full",
    "jsd": "full",
    "forward_kl": "topk",  # off-policy CD: the teacher's top-k
    "sampled_reverse_kl": "topk",  # only token log-probs are used
    "nll": "topk",  # only the response tokens are used
}
SAMPLERS = ("student", "teacher", "mix")


@dataclass(frozen=True)
class AlgoSpec:
    """The meaning of one configured algorithm."""

    name: str  # label for runs and reports (algo.name)
    sampler: str  # student | teacher | mix: who answers a step's prompts
    p_student: float  # probability that a step's responses come from the student (1 on-policy, 0 teacher)
    loss: str  # key of TEACHER_SUPPORT: the learner's main term
    teacher_returns: str  # student_topk | topk | full: what the teacher scores per position
    trains: bool  # False: the model with its context is only evaluated (icl)
    top_k: int  # support size of the per-token KL

    @property
    def student_topk(self) -> bool:
        """Whether the rollout engine must return the student's top-k (the OPCD reverse KL's support)."""
        return self.teacher_returns == "student_topk"

    @property
    def rollout_logprobs(self) -> int:
        """Log-probs per position requested from the engine: the student's top-k, or the sampled token's."""
        return self.top_k if self.student_topk else 1

    def steps(self, configured: int) -> int:
        """Optimizer steps to run: ``configured``, or none for a method that does not train."""
        return configured if self.trains else 0


def algo_spec(algo) -> AlgoSpec:
    """The :class:`AlgoSpec` of an ``AlgoConfig``; refuses inconsistent settings with the fix."""
    if algo.loss not in TEACHER_SUPPORT:
        raise ValueError(f"unknown algo.loss {algo.loss!r}; expected one of {sorted(TEACHER_SUPPORT)}")
    if algo.sampler not in SAMPLERS:
        raise ValueError(f"unknown algo.sampler {algo.sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if not algo.temperature > 0:
        raise ValueError(f"algo.temperature must be > 0 (got {algo.temperature})")
    if algo.nca_beta < 0 or algo.nca_warmup_steps < 0:
        raise ValueError(f"algo.nca_beta and algo.nca_warmup_steps must be >= 0 (got {algo.nca_beta} and "
                         f"{algo.nca_warmup_steps}); nca_beta=0 turns the regulariser off")
    check_nca_options(algo)  # nca_mode / nca_positions / nca_support / nca_after_step
    if algo.sampler == "mix" and not 0.0 <= algo.gkd_lambda <= 1.0:
        raise ValueError(f"algo.gkd_lambda must be in [0, 1] (got {algo.gkd_lambda})")
    p_student = {"student": 1.0, "teacher": 0.0, "mix": algo.gkd_lambda}[algo.sampler]
    spec = AlgoSpec(name=algo.name, sampler=algo.sampler, p_student=p_student, loss=algo.loss,
                    teacher_returns=TEACHER_SUPPORT[algo.loss], trains=algo.trains, top_k=algo.top_k)
    if spec.student_topk and p_student < 1.0:
        raise ValueError(f"algo.loss={algo.loss} needs student rollouts (the student's top-k), but algo "
                         f"{algo.name} samples from the {algo.sampler}; use loss=forward_kl, jsd or nll")
    return spec
