"""Causal-LM training with Trainer, written out step by step: the recipe behind `embgpt train`, to copy and change.

In the spirit of transformers' examples/pytorch/language-modeling/run_clm.py, for EmbGPT:

    python scripts/run_clm.py --data my.txt --output_dir out                         # from scratch, char tokenizer
    python scripts/run_clm.py --model openai-community/gpt2 --data my.txt --learning_rate 3e-5 --max_steps 500
    torchrun --nproc_per_node 2 scripts/run_clm.py ...                                # DDP (gloo on CPU, NCCL on GPU)
    accelerate launch --config_file scripts/accelerate/fsdp.yaml scripts/run_clm.py ...

Every TrainingArguments field is a flag; see `embgpt train --help` for the rest.
"""

import logging
import math
import os
import sys

from hf_embgpt import train
from hf_embgpt.training import data
from hf_embgpt.training.arguments import parse_args
from hf_embgpt.training.checkpoints import last_complete_checkpoint
from hf_embgpt.training.recipe import add_lora, build_model, trainer_class


def main(argv=None):
    # 1. Arguments: ours (model, data, run) and Trainer's, with nanoGPT's Shakespeare-char defaults.
    model_args, data_args, run_args, args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.should_log else logging.WARNING)

    # 2. Text, then a tokenizer (the checkpoint's own, or trained on the text), then blocks of block_size tokens.
    #    Rank 0 goes first so the datasets cache is written once.
    with args.main_process_first(desc="data"):
        raw = data.load_text(data_args.data, data_args.dataset_config, data_args.validation_data, data_args.text_column)
        tokenizer = data.make_tokenizer(data_args.tokenizer, raw, model_args.model_name_or_path)
        model = build_model(model_args, len(tokenizer), data_args.block_size, tokenizer)
        block_size = data_args.block_size or model.config.block_size
        train_set, eval_set = data.build_datasets(raw, tokenizer, block_size, data_args.validation_fraction)

    # 3. Optional LoRA: adapters on c_attn / c_proj / c_fc, everything else frozen.
    if model_args.lora_r:
        model = add_lora(model, model_args)

    # 4. Trainer with nanoGPT's optimizer (decay on >= 2-D weights, fused AdamW) and schedule (cosine to min_lr).
    trainer = trainer_class()(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=data.collate,
        processing_class=tokenizer,
        run_args=run_args,
    )
    checkpoint = last_complete_checkpoint(args.output_dir) if run_args.resume else None
    trainer.train(resume_from_checkpoint=checkpoint)

    # 5. Evaluate, save model + tokenizer (rank 0 only), sample.
    metrics = trainer.evaluate()
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        print(f"eval loss {metrics['eval_loss']:.4f}, perplexity {math.exp(metrics['eval_loss']):.2f}")
        model = trainer.accelerator.unwrap_model(trainer.model)
        for text in train.sample(model, tokenizer, run_args.prompt, run_args.num_samples, run_args.sample_tokens):
            print("---", text, sep="\n")
        train.plot_loss_curve(trainer.state.log_history, os.path.join(args.output_dir, "loss_curve.png"))
    return metrics


if __name__ == "__main__":
    main()
    train.end_distributed()  # every rank done: the process group shuts down in order (see its docstring)
    sys.exit(0)
