"""What a weight format (bf16, int8) does to a model's outputs, measured
against fp32: the largest logit difference and greedy agreement (the share
of steps whose argmax is the fp32 choice, decoding teacher-forced along the
fp32 greedy sequence so that one early disagreement does not decide the
rest).

Two references: the fixtures (Hugging Face's own fp32 logits for the tiny
checkpoints), or an fp32 package of the same checkpoint on generated inputs
(for models without fixtures).

    python -m iblip_model.format_quality --package P --fixtures DIR --checkpoint-name tiny-llama
    python -m iblip_model.format_quality --package P --reference FP32_PACKAGE [--prompts 8]
"""

import argparse
import json
import os

import numpy as np
import torch

from iblip_model.package_runner import PackageRunner

STEPS = 20


class Tally:
    def __init__(self):
        self.steps = self.agree = 0
        self.max_diff = 0.0
        self.logit_range = 0.0

    def add(self, tokens, logits, reference_tokens, reference_logits):
        n = len(reference_tokens)
        self.steps += n
        self.agree += sum(int(a == b) for a, b in zip(tokens[:n], reference_tokens))
        diff = (logits[:n].float() - reference_logits[:n].float()).abs().max().item()
        self.max_diff = max(self.max_diff, diff)
        self.logit_range = max(self.logit_range, reference_logits[:n].abs().max().item())

    def report(self):
        return {"steps": self.steps, "greedy_agreement": self.agree / self.steps,
                "max_logit_diff": self.max_diff, "max_abs_logit": self.logit_range}


def against_fixtures(runner, fixtures_dir, checkpoint_name):
    """Every case of the checkpoint, every row, teacher-forced along the
    reference greedy ids; compared with the reference's step logits."""
    tally = Tally()
    cases_dir = os.path.join(fixtures_dir, "cases", checkpoint_name)
    for case in sorted(os.listdir(cases_dir)):
        directory = os.path.join(cases_dir, case)
        with open(os.path.join(directory, "reference.json"), encoding="utf-8") as f:
            reference = json.load(f)
        load = lambda name: torch.from_numpy(np.load(os.path.join(directory, name + ".npy")))  # noqa: E731
        step_logits = load("greedy_step_logits")
        mask = torch.tensor(reference["attention_mask"])
        ids = torch.tensor(reference["input_ids"])
        soft = runner.soft_prompt(load("pixel_values"), torch.tensor(reference["qformer_input_ids"]),
                                  torch.tensor(reference["qformer_attention_mask"]))
        expected_rows, eos, _ = reference_tokens(reference)
        for row, expected in enumerate(expected_rows):
            prompt = ids[row][mask[row].bool()][None]
            tokens, logits = runner.generate(soft[row:row + 1], prompt, STEPS, eos, forced=expected)
            tally.add(tokens, logits, expected, step_logits[:, row])
    return tally.report()


def reference_tokens(reference):
    """The fixture's greedy ids per row (Hugging Face's start token and
    padding removed), with its EOS and pad ids."""
    greedy = reference["generate"]["greedy"]
    pad = greedy["kwargs"].get("pad_token_id", 0)
    eos = greedy["kwargs"].get("eos_token_id", 1)
    rows = []
    for sequence in greedy["sequences"]:
        tokens = []
        for token in sequence[1:]:
            tokens.append(token)
            if token == eos:
                break
        while tokens and tokens[-1] == pad and pad != eos:
            tokens.pop()
        rows.append(tokens)
    return rows, eos, pad


def against_package(runner, reference, prompts, seed=0):
    """`prompts` random images and prompt ids; the reference package decodes
    greedily, the other follows its ids."""
    generator = torch.Generator().manual_seed(seed)
    manifest = reference.manifest
    size = manifest["image"]["size"]
    eos = manifest["generation"]["eos_token_ids"][0]
    tally = Tally()
    for _ in range(prompts):
        pixels = torch.randn(1, 3, size, size, generator=generator)
        words = manifest["qformer_vocab_size"]  # past BERT's [unused] ids where there are any
        qids = torch.randint(min(1000, words // 2), words - 1, (1, 8), generator=generator)
        prompt = torch.randint(3, manifest["lm_vocab_size"] - 1, (1, 8), generator=generator)
        qmask = torch.ones_like(qids)
        expected, expected_logits = reference.generate(reference.soft_prompt(pixels, qids, qmask),
                                                       prompt, STEPS, eos)
        tokens, logits = runner.generate(runner.soft_prompt(pixels, qids, qmask), prompt, STEPS, eos,
                                         forced=expected)
        tally.add(tokens, logits, expected, expected_logits)
    return tally.report()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True)
    parser.add_argument("--fixtures", help="../shared/fixtures")
    parser.add_argument("--checkpoint-name", help="fixture checkpoint the package was exported from")
    parser.add_argument("--reference", help="fp32 package of the same checkpoint")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runner = PackageRunner(args.package)
    if args.reference:
        report = against_package(runner, PackageRunner(args.reference), args.prompts)
    else:
        report = against_fixtures(runner, args.fixtures, args.checkpoint_name)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
