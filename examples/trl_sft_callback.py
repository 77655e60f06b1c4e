"""finemem's audit inside TRL's `SFTTrainer`, with LoRA: every saved adapter is audited, its
metrics go to TensorBoard next to the loss, and training stops when over-memorization sets in
(opt-in).

    python examples/trl_sft_callback.py OUT_DIR [--model builtin:test] [--steps 8]
    finemem report OUT_DIR/finemem
"""

from __future__ import annotations

import argparse


def main(out_dir: str, *, model: str = "builtin:test", steps: int = 8, save_steps: int = 4,
         lora: bool = True, stop_after_overmemorized: int | None = None,
         report_to=("tensorboard",)):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from finemem.config import DataSource
    from finemem.data.loaders import load_examples
    from finemem.integrations import FinememCallback
    from finemem.models.load import resolve_model

    path = resolve_model(model)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows = [{"prompt": e.prompt, "completion": e.completion}
            for e in load_examples(DataSource(source="builtin:arith", n=16))]
    args = SFTConfig(output_dir=out_dir, max_steps=steps, save_steps=save_steps,
                     per_device_train_batch_size=4, learning_rate=3e-3, logging_steps=1,
                     report_to=list(report_to), use_cpu=True, save_only_model=True,
                     disable_tqdm=True, max_length=256)
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                             task_type="CAUSAL_LM") if lora else None
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config)
    cb = FinememCallback(trainer, base_model=model,
                         data={"train": {"source": "builtin:arith", "n": 16},
                               "eval": {"test": {"source": "builtin:arith", "split": "test",
                                                 "n": 6}}},
                         audit={"likelihood": {"train_sample": 6},
                                "overmem": {"diversity_prompts": 2, "k_samples": 2,
                                            "max_new_tokens": 8,
                                            "embedding_dispersion": False}},
                         stop_after_overmemorized=stop_after_overmemorized)
    trainer.train()
    return cb


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--model", default="builtin:test")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    a = ap.parse_args()
    cb = main(a.out_dir, model=a.model, steps=a.steps, lora=not a.full)
    print(f"run folder: {cb.run_dir}\nship: {cb.ship}")
    import torch.distributed as dist

    if dist.is_initialized():  # under torchrun: a clean exit (gloo can abort at exit otherwise)
        dist.barrier()
        dist.destroy_process_group()
