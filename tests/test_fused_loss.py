"""The model-step options of issue 30 give the default path's numbers: the chunked lm_head log-probs
(model/fused_loss.py), the cross-entropy loss, and attention with expanded KV heads."""
import pytest
import torch

from model.fused_loss import chunked_logprobs
from model.model_minimind import Attention, MiniMindForCausalLM, gather_logprobs
from tests.test_model import tiny_model


@pytest.mark.parametrize("chunk", [5, 7, 64])  # several chunks with a short last one; one chunk
def test_chunked_logprobs_equal_the_full_logits_values_and_gradients(chunk):
    torch.manual_seed(0)
    h = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 50, (3, 7))
    g = torch.randn(3, 7, dtype=torch.float64)
    want = gather_logprobs(h @ w.t(), t)
    (want.double() * g).sum().backward()
    want_h, want_w = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    got = chunked_logprobs(h, w, t, chunk)
    (got.double() * g).sum().backward()
    assert torch.allclose(got.double(), want.double(), atol=1e-6)
    assert torch.allclose(h.grad, want_h, atol=1e-6) and torch.allclose(w.grad, want_w, atol=1e-6)


def loss_and_grads(model, ids, labels, impl):
    model.zero_grad(set_to_none=True)
    model.loss_impl = impl
    out = model(ids, labels=labels)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("impl", ["chunked", "cross_entropy"])
def test_loss_options_equal_the_default_loss_and_gradients(impl, monkeypatch):
    monkeypatch.setattr("model.fused_loss.CHUNK_ROWS", 10)  # 3 x 15 label positions: five chunks
    model = tiny_model().train()
    ids = torch.randint(3, 6400, (3, 16))
    labels = ids.clone()
    labels[0, :5] = -100  # an SFT-style prompt part
    labels[2, 9:] = -100
    base, base_grads = loss_and_grads(model, ids, labels, "logprobs")
    other, grads = loss_and_grads(model, ids, labels, impl)
    assert torch.allclose(other.loss, base.loss, atol=1e-5)
    assert grads.keys() == base_grads.keys()
    for name in grads:
        assert torch.allclose(grads[name], base_grads[name], atol=1e-5), name
    if impl == "chunked":
        assert torch.allclose(other.token_logprobs, base.token_logprobs, atol=1e-5) and other.logits is None
    model.loss_impl = MiniMindForCausalLM.loss_impl


def test_chunked_loss_under_bf16_autocast_is_close_to_the_default():
    model = tiny_model().train()
    ids = torch.randint(3, 6400, (2, 24))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        base, _ = loss_and_grads(model, ids, ids, "logprobs")
        other, _ = loss_and_grads(model, ids, ids, "chunked")
    model.loss_impl = MiniMindForCausalLM.loss_impl
    assert abs(other.loss.item() - base.loss.item()) < 2e-2 * abs(base.loss.item())


def test_unknown_loss_impl_is_refused():
    model = tiny_model()
    model.loss_impl = "fused"
    with pytest.raises(ValueError, match="loss_impl 'fused'"):
        model(torch.tensor([[5, 6, 7]]), labels=torch.tensor([[5, 6, 7]]))


def test_expanded_kv_heads_equal_sdpa_gqa(monkeypatch):
    model = tiny_model().train()
    ids = torch.randint(3, 6400, (2, 12))
    base, base_grads = loss_and_grads(model, ids, ids, "logprobs")
    monkeypatch.setattr(Attention, "sdpa_gqa", False)
    other, grads = loss_and_grads(model, ids, ids, "logprobs")
    assert torch.allclose(other.logits, base.logits, atol=1e-5)
    assert all(torch.allclose(grads[n], base_grads[n], atol=1e-5) for n in grads)
