"""Per-token log-probs of the targets through the lm_head, chunked: the [tokens, vocab] logits never exist whole.

The plain path (`gather_logprobs(lm_head(h))`) writes bf16 logits, an fp32 copy, the log-sum-exp, and in backward
a softmax-sized gradient and its bf16 cast: at 128 x 512 tokens and vocab 6400 each is 0.8-1.7 GB, several
passes per step, which at width 512 is traffic of the same order as the whole model's element-wise work. Here
`ChunkedLinearLogprobs` computes logits for `chunk` rows at a time, keeps only each row's log-prob (4 bytes a
token), and recomputes a chunk's logits in backward (one extra lm_head matmul: ~4% more FLOPs at 512/8).

Same numbers as the plain path up to float rounding (tests/test_fused_loss.py, CPU fp32 and bf16 autocast).
An option measured by `scripts/bench_round3.py step` (model.loss_impl = "chunked"), not the default.
"""
from typing import Optional

import torch

CHUNK_ROWS = 8192  # 8192 x 6400 fp32 logits = 210 MB per chunk; 65,536 tokens (128 x 512) = 8 chunks


class ChunkedLinearLogprobs(torch.autograd.Function):
    """log_softmax(hidden @ weight.T)[row, target[row]] for every row, `chunk` rows of logits at a time."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        pieces = []
        for s in range(0, hidden.shape[0], chunk):
            logits = (hidden[s:s + chunk] @ weight.t()).float()
            picked = logits.gather(1, targets[s:s + chunk, None]).squeeze(1)
            pieces.append(picked - torch.logsumexp(logits, dim=-1))
        ctx.save_for_backward(hidden, weight, targets)
        ctx.chunk = chunk
        return torch.cat(pieces)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        hidden, weight, targets = ctx.saved_tensors
        chunk = ctx.chunk
        grad_hidden, grad_weight = [], torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for s in range(0, hidden.shape[0], chunk):
            h, t, g = hidden[s:s + chunk], targets[s:s + chunk], grad[s:s + chunk].float()
            probs = (h @ weight.t()).float().softmax(-1)
            # d logp[target] / d logits = onehot(target) - softmax, scaled per row by the incoming gradient
            d_logits = -probs * g[:, None]
            d_logits.scatter_add_(1, t[:, None], g[:, None])
            d_logits = d_logits.to(hidden.dtype)
            grad_hidden.append(d_logits @ weight)
            grad_weight += (d_logits.t() @ h).float()
        return torch.cat(grad_hidden), grad_weight.to(weight.dtype), None, None


def chunked_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                     chunk: Optional[int] = None) -> torch.Tensor:
    """[..., H] hidden states, [V, H] lm_head weight, [...] target ids (valid ids; mask ignored rows yourself) ->
    [...] fp32 log-probs. Under autocast the matmuls run in the autocast dtype, as `lm_head` would."""
    kind = hidden.device.type
    if torch.is_autocast_enabled(kind):
        dtype = torch.get_autocast_dtype(kind)
        hidden, weight = hidden.to(dtype), weight.to(dtype)  # casts outside: their gradients flow back to fp32
    shape = targets.shape
    with torch.autocast(kind, enabled=False):
        out = ChunkedLinearLogprobs.apply(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1),
                                          chunk or CHUNK_ROWS)
    return out.view(shape)
