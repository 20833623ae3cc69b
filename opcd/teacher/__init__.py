"""Teacher scoring: log-probs of the student's responses with the privileged context prepended."""
from opcd.teacher.scoring import score_responses

__all__ = ["score_responses"]
