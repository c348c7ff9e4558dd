"""Where a batch-1 decode step of a package spends its time: torch's
profiler over the language model's decode (what the server's engine calls
for one stream), operators ranked by their own CPU time.

    python -m iblip_model.profile_decode --package P [--steps 16] [--context 64] [--json]
"""

import argparse
import json

import torch

from iblip_model.package_runner import PackageRunner


@torch.no_grad()
def profile(package_dir, steps, context, top):
    runner = PackageRunner(package_dir)
    lm, manifest = runner.lm, runner.manifest
    hidden = manifest["lm_hidden_size"]
    embeds = torch.randn(1, context, hidden) * 0.02
    mask = torch.ones(1, context, dtype=torch.long)
    if runner.llama:
        _, keys, values = lm.prefill(embeds, mask, torch.arange(context)[None])
        step = lambda keys, values, length: lm.decode(  # noqa: E731
            torch.tensor([[5]]), torch.ones(1, length, dtype=torch.long),
            torch.tensor([[length - 1]]), keys, values)
    else:
        encoded = lm.encode(embeds, mask)
        cross_k, cross_v = lm.cross_kv(encoded)
        _, keys, values = lm.decode(torch.tensor([[0]]), torch.tensor([[0]]), torch.tensor([[1]]),
                                    None, None, cross_k, cross_v, mask)
        step = lambda keys, values, length: lm.decode(  # noqa: E731
            torch.tensor([[5]]), torch.arange(length)[None], torch.ones(1, length, dtype=torch.long),
            keys, values, cross_k, cross_v, mask)
    for _ in range(3):  # warm-up: TorchScript's profiling executor optimizes on the 2nd call
        step(keys, values, keys.shape[3] + 1)
    with torch.autograd.profiler.profile() as prof:
        for _ in range(steps):
            _, k, v = step(keys, values, keys.shape[3] + 1)
            keys, values = torch.cat([keys, k], 3), torch.cat([values, v], 3)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {"dtype": manifest["dtype"], "step_ms": total / steps / 1000,
            "ops": [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count // steps}
                    for e in ranked]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = profile(args.package, args.steps, args.context, args.top)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['dtype']}: {result['step_ms']:.1f} ms of operator time per decode step")
    for op in result["ops"]:
        print(f"  {100 * op['share']:5.1f}%  {op['calls']:4d} calls/step  {op['op']}")


if __name__ == "__main__":
    main()
