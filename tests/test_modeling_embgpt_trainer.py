"""Trainer integration of the loss: gradient accumulation is exact because num_items_in_batch reaches the loss."""

import pytest
import torch
from transformers import GPT2LMHeadModel, Trainer, TrainingArguments

from hf_embgpt import EmbGPTForCausalLM


def uneven_examples(n=4, length=16):
    """Examples whose labels hide different numbers of tokens (-100), so per-batch means differ from the total."""
    g = torch.Generator().manual_seed(0)
    examples = []
    for i in range(n):
        ids = torch.randint(0, 50257, (length,), generator=g)
        labels = ids.clone()
        labels[: 3 * i] = -100
        examples.append({"input_ids": ids, "attention_mask": torch.ones(length, dtype=torch.long), "labels": labels})
    return examples


def train_one_step(model, output_dir, batch_size, accumulation):
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=uneven_examples())
    result = trainer.train()
    return {n: p.detach().clone() for n, p in model.named_parameters()}, result.training_loss


def test_batch_4_equals_batch_1_times_accumulation_4(tmp_path, gpt2_dir):
    model_class = EmbGPTForCausalLM
    whole, whole_loss = train_one_step(model_class.from_pretrained(gpt2_dir), tmp_path / "a", 4, 1)
    accumulated, accumulated_loss = train_one_step(model_class.from_pretrained(gpt2_dir), tmp_path / "b", 1, 4)
    start = model_class.from_pretrained(gpt2_dir).state_dict()
    for name, tensor in whole.items():
        assert not torch.equal(tensor, start[name]) or "wpe" in name, f"{name} did not move"
        assert (tensor - accumulated[name]).abs().max().item() <= 1e-6, name
    assert whole_loss == pytest.approx(accumulated_loss, abs=1e-5)


def test_accumulated_trainer_step_equals_a_full_batch_sgd_step_of_gpt2(tmp_path, gpt2_dir):
    """The oracle: GPT2LMHeadModel's mean loss over every labelled token of the 4 examples, one SGD step by hand.

    (Trainer run on GPT2LMHeadModel itself is not the oracle here: its loss_type is None, so Trainer counts the
    unshifted labels for num_items_in_batch and the loss comes out scaled by 45/46 on this data.)
    """
    ours, ours_loss = train_one_step(EmbGPTForCausalLM.from_pretrained(gpt2_dir), tmp_path / "a", 1, 4)
    ref = GPT2LMHeadModel.from_pretrained(gpt2_dir).train()
    batch = {key: torch.stack([e[key] for e in uneven_examples()]) for key in ("input_ids", "attention_mask", "labels")}
    loss = ref(**batch).loss
    loss.backward()
    assert ours_loss == pytest.approx(loss.item(), abs=1e-5)
    for name, param in ref.named_parameters():
        expected = (param - 0.5 * param.grad).detach()
        expected = expected.t() if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) else expected
        assert (ours[name] - expected).abs().max().item() <= 1e-5, name
