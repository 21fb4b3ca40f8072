"""LoRA through peft: only adapters train, PEFT files on disk, load, merge, and the same adapter on a HF Llama."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from model.model_lora import apply_lora, load_lora, lora_parameters, merge_lora, save_lora
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM


def tiny_base(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = MiniMindConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, **kw)
    return MiniMindForCausalLM(cfg).eval()


def trained_adapter(model, steps=3):
    """Apply LoRA and take a few optimizer steps so the adapter is non-zero."""
    peft_model = apply_lora(model, rank=4)
    opt = torch.optim.AdamW(lora_parameters(peft_model), lr=1e-2)
    x = torch.randint(3, 6400, (2, 10))
    for _ in range(steps):
        loss = peft_model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return peft_model.eval()


def test_only_adapter_parameters_train():
    base = tiny_base()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    peft_model = trained_adapter(base)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # 7 projections x 2 layers x (A, B)
    assert len(lora_parameters(peft_model)) == 28
    for k, v in peft_model.get_base_model().state_dict().items():
        if "lora_" not in k and "base_layer" not in k and k in before:
            assert torch.equal(v, before[k]), k


def test_moe_router_is_not_adapted():
    peft_model = apply_lora(tiny_base(use_moe=True), rank=2)
    names = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert not any(".mlp.gate.lora" in n for n in names)
    assert any("experts.3.down_proj.lora_A" in n for n in names)


def test_save_load_merge_round_trip(tmp_path):
    peft_model = trained_adapter(tiny_base())
    x = torch.randint(3, 6400, (1, 12))
    expected = peft_model(input_ids=x).logits
    out = save_lora(peft_model, tmp_path / "lora_identity_64")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    loaded = load_lora(tiny_base(), out)
    torch.testing.assert_close(loaded(input_ids=x).logits, expected, atol=1e-5, rtol=1e-5)
    merged = merge_lora(loaded)
    assert isinstance(merged, MiniMindForCausalLM)
    assert set(merged.state_dict()) == set(tiny_base().state_dict())
    torch.testing.assert_close(merged(x).logits, expected, atol=1e-5, rtol=1e-5)


def test_adapter_loads_onto_hugging_face_llama(tmp_path):
    base = tiny_base()
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=6400, hidden_size=64, intermediate_size=192,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=128, rope_theta=1e6, rms_norm_eps=1e-5,
                                         tie_word_embeddings=True)).eval()
    llama.load_state_dict(base.state_dict(), strict=True)  # MiniMind dense keys are Llama's keys
    peft_model = trained_adapter(tiny_base())
    save_lora(peft_model, tmp_path / "adapter")
    x = torch.randint(3, 6400, (1, 12))
    on_llama = load_lora(llama, tmp_path / "adapter")
    torch.testing.assert_close(on_llama(input_ids=x).logits, peft_model(input_ids=x).logits, atol=1e-4, rtol=1e-4)


def test_missing_adapter_names_path_and_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_lora.py"):
        load_lora(tiny_base(), tmp_path / "nope")
