"""Teacher scoring as a pure function of a model and token sequences (no Ray).

We score with a plain batched forward pass (log-softmax + gather), not vLLM prompt log-probs:
vLLM returns prompt top-k as Python dicts per position, which costs more than the forward itself
for short responses, and it cannot return log-probs at *given* ids (the student's top-k), which
the OPCD loss needs. ``benchmarks/bench_teacher.py`` measures the choice.
"""
from __future__ import annotations

import torch

from opcd.batch import pad_2d
from opcd.modeling import response_logits

ROWS = 1024  # positions per LM-head call when only hidden states are shipped: [ROWS, V] at a time


def _token_logprobs_from_hidden(model, hidden: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """[b, t] log-prob of ``tokens`` [b, t] from final hidden states [b, t, d], ``ROWS`` positions at a
    time (the same head, dtype and upcast as the full forward, never the micro-batch's [b, t, V])."""
    head = model.get_output_embeddings()
    flat, ids = hidden.reshape(-1, hidden.shape[-1]), tokens.reshape(-1)
    out = torch.empty(flat.shape[0], dtype=torch.float32, device=hidden.device)
    for i in range(0, flat.shape[0], ROWS):
        logp = torch.log_softmax(head(flat[i:i + ROWS]).float() / temperature, dim=-1)
        out[i:i + ROWS] = logp.gather(-1, ids[i:i + ROWS, None])[:, 0]
    return out.view(tokens.shape)


@torch.no_grad()
def score_responses(model, seqs: list[list[int]], resp_lens: list[int], pad_id: int, *,
                    support: str | torch.Tensor = "topk", k: int = 16, temperature: float = 1.0,
                    micro_batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Teacher log-probs over the response positions of ``seqs`` (context + prompt + response).

    ``support`` selects the token ids scored at each position:
      * a long tensor [B, T, k]: those ids (the student's top-k, for the OPCD reverse KL);
      * ``"topk"``: the teacher's own k most likely tokens (forward KL on teacher samples);
      * ``"full"``: every vocabulary id (k = V), for full-vocabulary losses on small vocabularies.

    Returns ``support_ids`` [B, T, k] long, ``logprobs`` [B, T, k] and ``token_logprobs`` [B, T]
    (log-prob of the response token itself), in nats at ``temperature``; padded positions are 0. With
    ``"full"``, ``logprobs`` is [B, T, V] in vocabulary order and ``support_ids`` is empty ([B, T, 0]).

    ``"hidden"`` (``algo.teacher_transfer=hidden``): instead of the full log-probs, ``hidden`` [B, T, d]
    holds the teacher's final hidden states (the input of its LM head, after the final norm), in
    the model's dtype, independent of ``temperature``; the learner forms the logits with its copy of
    the head. ``support_ids`` and ``logprobs`` are empty ([B, T, 0]); ``token_logprobs`` as above.
    """
    B, T = len(seqs), max(max(resp_lens), 1)
    out_ids, out_lp, out_tok, out_hidden = [], [], [], []
    for i in range(0, B, micro_batch_size):
        sl = slice(i, i + micro_batch_size)
        if isinstance(support, str) and support == "hidden":
            h, mask = response_logits(model, seqs[sl], resp_lens[sl], pad_id, return_hidden=True)  # [b, t, d]
            t = h.shape[1]
            resp = pad_2d([s[len(s) - r:] for s, r in zip(seqs[sl], resp_lens[sl])], t, 0, torch.long).to(h.device)
            tok = _token_logprobs_from_hidden(model, h, resp, temperature) * mask
            out_hidden.append(torch.nn.functional.pad(h * mask[..., None], (0, 0, 0, T - t)).cpu())
            out_tok.append(torch.nn.functional.pad(tok, (0, T - t)).cpu())
            continue
        logits, mask = response_logits(model, seqs[sl], resp_lens[sl], pad_id)
        logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # [b, t, V]
        t = logp.shape[1]
        resp = pad_2d([s[len(s) - r:] for s, r in zip(seqs[sl], resp_lens[sl])], t, 0, torch.long).to(logp.device)
        tok = torch.gather(logp, -1, resp[..., None])[..., 0] * mask
        if isinstance(support, torch.Tensor):
            ids = support[sl, :t].to(logp.device)
        elif support == "topk":
            ids = logp.topk(k, dim=-1).indices
        elif support == "full":
            # Position j of the last axis *is* token j: no id tensor (at V = 49k, an int64 [B, T, V]
            # index costs twice the log-probs themselves, to build, copy and ship to the learner).
            ids = torch.zeros(*logp.shape[:2], 0, dtype=torch.long, device=logp.device)
        else:
            raise ValueError(f"unknown support {support!r}; expected a tensor, 'topk' or 'full'")
        lp = (logp if support == "full" else torch.gather(logp, -1, ids)) * mask[..., None]
        pad = T - t
        out_ids.append(torch.nn.functional.pad(ids, (0, 0, 0, pad)).cpu())
        out_lp.append(torch.nn.functional.pad(lp, (0, 0, 0, pad)).cpu())
        out_tok.append(torch.nn.functional.pad(tok, (0, pad)).cpu())
    if out_hidden:
        hidden, empty = torch.cat(out_hidden), torch.zeros(B, T, 0)
        return {"support_ids": empty.long(), "logprobs": empty, "token_logprobs": torch.cat(out_tok), "hidden": hidden}
    return {"support_ids": torch.cat(out_ids), "logprobs": torch.cat(out_lp), "token_logprobs": torch.cat(out_tok)}
