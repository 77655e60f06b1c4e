"""finemem's audit inside a plain Hugging Face `Trainer`: every saved checkpoint is audited,
its metrics go to TensorBoard next to the loss, and training stops when over-memorization
sets in (opt-in).

    python examples/hf_trainer_callback.py OUT_DIR [--model builtin:test] [--steps 8]
    finemem report OUT_DIR/finemem          # the HTML report of the audited checkpoints
    tensorboard --logdir OUT_DIR/runs       # finemem/test/answer_accuracy, ... beside the loss
"""

from __future__ import annotations

import argparse


def arith(split: str, n: int):
    from finemem.config import DataSource
    from finemem.data.loaders import load_examples

    return load_examples(DataSource(source="builtin:arith", split=split, n=n))


def main(out_dir: str, *, model: str = "builtin:test", steps: int = 8, save_steps: int = 4,
         stop_after_overmemorized: int | None = None, report_to=("tensorboard",)):
    from datasets import Dataset
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq,
                              Trainer, TrainingArguments)

    from finemem.integrations import FinememCallback
    from finemem.models.load import resolve_model

    path = resolve_model(model)  # builtin:<size> is built once and cached; any HF folder works
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token

    def encode(ex):  # loss on the completion only, as finemem trains and scores
        p = [tok.bos_token_id] + tok(ex["prompt"], add_special_tokens=False)["input_ids"]
        c = tok(ex["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        return {"input_ids": p + c, "attention_mask": [1] * (len(p) + len(c)),
                "labels": [-100] * len(p) + c}

    train = Dataset.from_list([{"prompt": e.prompt, "completion": e.completion}
                               for e in arith("train", 16)]).map(encode, remove_columns=[
                                   "prompt", "completion"])
    args = TrainingArguments(output_dir=out_dir, max_steps=steps, save_steps=save_steps,
                             per_device_train_batch_size=4, learning_rate=3e-3,
                             logging_steps=1, report_to=list(report_to), use_cpu=True,
                             save_only_model=True, disable_tqdm=True)
    trainer = Trainer(model=AutoModelForCausalLM.from_pretrained(path), args=args,
                      train_dataset=train, processing_class=tok,
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True))
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
    ap.add_argument("--stop-after-overmemorized", type=int, default=None)
    a = ap.parse_args()
    cb = main(a.out_dir, model=a.model, steps=a.steps,
              stop_after_overmemorized=a.stop_after_overmemorized)
    print(f"run folder: {cb.run_dir}\nship: {cb.ship}")
    import torch.distributed as dist

    if dist.is_initialized():  # under torchrun: a clean exit (gloo can abort at exit otherwise)
        dist.barrier()
        dist.destroy_process_group()
