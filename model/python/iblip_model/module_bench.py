"""Times the exported modules, side by side in one process (the machine is
shared and noisy: runs alternate, medians are reported).

    python -m iblip_model.module_bench executors --package P [--runs 9]
        each module (vision, Q-Former, LLaMA prefill_paged and decode_paged)
        under TorchScript's profiling executor and under the legacy one
    python -m iblip_model.module_bench fusion --checkpoint HF_DIR [--dtype bf16]
        the language model with and without fused q/k/v and gate/up
        projections (and the Q-Former with and without fused q/k/v)
    python -m iblip_model.module_bench stages --checkpoint HF_DIR --package P
        the vision encoder and the Q-Former as the eager loop runs them
        (the checkpoint's model in the package's dtype) and as the server
        does (the package's modules, legacy executor), and the share of the
        package's vision pass spent in matrix products (the floor both share)
    python -m iblip_model.module_bench linear --package P [--rows 1,2,4,8,16,32]
        a bf16 package's language-model weights through iblip::linear and
        through aten::linear, per number of rows (a decode step's batch):
        all of them in turn as a step reads them, then each shape alone
        (repeated, so small ones come from the cache), with GB/s; and
        decode_paged at those batches (needs the C++ operators, below)

Set IBLIP_CUSTOM_OPS_LIBRARY=build/model/libiblip_custom_ops.so to
time the C++ operators the server runs (attention, bf16 Linear) instead of
the Python references."""

import argparse
import copy
import json
import os
import statistics
import time

import torch

from iblip_model import export_modules, ops


def _set_executor(profiling):
    torch._C._jit_set_profiling_executor(profiling)
    torch._C._jit_set_profiling_mode(profiling)


def _time(call):
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def side_by_side(calls, runs, warmup=3):
    """calls: {name: zero-argument callable}. Warm-up, then `runs` rounds
    in which every call runs once, in turn; returns {name: median ms}."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            times[name].append(_time(call))
    return {name: statistics.median(t) for name, t in times.items()}


class PagedInputs:
    """A paged pool for one language model and the inputs of prefill_paged
    and decode_paged over it: `rows` sequences of `context` positions each,
    their blocks shuffled."""

    def __init__(self, manifest, rows, context, block_size=16, seed=0):
        kv = manifest["paged_kv_cache"]
        dtype = torch.bfloat16 if kv["dtype"] == "bf16" else torch.float32
        per_row = (context + 1 + block_size - 1) // block_size
        blocks = rows * per_row
        shape = (kv["layers"], blocks, block_size, kv["kv_heads"], kv["head_dim"])
        generator = torch.Generator().manual_seed(seed)
        self.keys = torch.randn(shape, generator=generator).to(dtype)
        self.values = torch.randn(shape, generator=generator).to(dtype)
        order = torch.randperm(blocks, generator=generator)
        self.tables = order.view(rows, per_row)
        self.slots = (self.tables[:, :, None] * block_size + torch.arange(block_size)).flatten(1)
        self.positions = torch.full((rows,), context, dtype=torch.long)
        self.slot_mapping = self.slots[:, context]
        self.ids = torch.randint(3, manifest["lm_vocab_size"], (rows, 1), generator=generator)


def _load_pair(path, warm):
    """Two copies of a module: one run first under the profiling executor,
    one under the legacy executor (a module's executor is fixed at its first
    run). `warm(module)` makes that first run."""
    modules = {}
    for name, profiling in (("profiling", True), ("legacy", False)):
        _set_executor(profiling)
        modules[name] = torch.jit.load(path)
        for _ in range(3):
            warm(modules[name])
    _set_executor(True)
    return modules


@torch.no_grad()
def executors(package, runs, prompt, context, batch):
    with open(os.path.join(package, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    files = {k: os.path.join(package, v) for k, v in manifest["modules"].items()}
    size = manifest["image"]["size"]
    pixels = torch.randn(1, 3, size, size)
    image_embeds = torch.jit.load(files["vision_encoder"])(pixels)
    qformer_ids = torch.randint(1, manifest["qformer_vocab_size"], (1, 12))
    qformer_mask = torch.ones_like(qformer_ids)
    hidden = manifest["lm_hidden_size"]
    embeds = torch.randn(1, manifest["num_query_tokens"] + prompt, hidden) * 0.02
    results = {}

    def run(name, path, call):
        pair = _load_pair(path, call)
        results[name] = side_by_side({k: (lambda m=m: call(m)) for k, m in pair.items()}, runs)

    run("vision", files["vision_encoder"], lambda m: m(pixels))
    run("qformer", files["qformer"], lambda m: m(image_embeds, qformer_ids, qformer_mask))
    if manifest["lm_family"] == "llama":
        single = PagedInputs(manifest, 1, embeds.shape[1])
        run(f"prefill_paged ({embeds.shape[1]} positions)", files["language_model"],
            lambda m: m.prefill_paged(embeds, 0, single.slots[0], single.keys, single.values))
        for rows in sorted({1, batch}):
            paged = PagedInputs(manifest, rows, context)
            run(f"decode_paged (batch {rows}, context {context})", files["language_model"],
                lambda m, p=paged: m.decode_paged(p.ids, p.positions, p.slot_mapping, p.tables,
                                                  p.keys, p.values))
    return results


@torch.no_grad()
def fusion(checkpoint, dtype, runs, prompt, context, batch):
    from iblip_model.modeling.fusion import fuse_llama_projections, fuse_qformer_projections
    from iblip_model.modeling.instructblip import load_pretrained

    model = load_pretrained(checkpoint, {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype])
    manifest = {"paged_kv_cache": {}, "lm_vocab_size": model.config.text.vocab_size}
    text = model.config.text
    manifest["paged_kv_cache"] = {"dtype": dtype, "layers": text.num_hidden_layers,
                                  "kv_heads": text.num_key_value_heads,
                                  "head_dim": text.hidden_size // text.num_attention_heads}
    script = lambda module, methods: torch.jit.freeze(  # noqa: E731
        torch.jit.script(module.eval()), preserved_attrs=methods)
    lms = {"separate": script(export_modules.LlamaLanguageModel(model.language_model),
                              export_modules.LLAMA_METHODS)}
    fused_lm = fuse_llama_projections(copy.deepcopy(model.language_model))
    lms["fused"] = script(export_modules.LlamaLanguageModel(fused_lm), export_modules.LLAMA_METHODS)
    qformers = {"separate": script(export_modules.QFormerProjector(model), [])}
    fused_model = copy.deepcopy(model)
    fuse_qformer_projections(fused_model.qformer)
    qformers["fused"] = script(export_modules.QFormerProjector(fused_model), [])
    size = model.config.vision.image_size
    image_embeds = model.vision_model(torch.randn(1, 3, size, size)).float()
    qformer_ids = torch.randint(1, model.config.qformer.vocab_size, (1, 12))
    embeds = torch.randn(1, model.config.num_query_tokens + prompt, text.hidden_size) * 0.02
    single = PagedInputs(manifest, 1, embeds.shape[1])
    paged = PagedInputs(manifest, batch, context)
    results = {
        "qformer": side_by_side({k: (lambda m=m: m(image_embeds, qformer_ids, torch.ones_like(qformer_ids)))
                                 for k, m in qformers.items()}, runs),
        f"prefill_paged ({embeds.shape[1]} positions)": side_by_side(
            {k: (lambda m=m: m.prefill_paged(embeds, 0, single.slots[0], single.keys, single.values))
             for k, m in lms.items()}, runs),
        f"decode_paged (batch {batch}, context {context})": side_by_side(
            {k: (lambda m=m: m.decode_paged(paged.ids, paged.positions, paged.slot_mapping,
                                            paged.tables, paged.keys, paged.values))
             for k, m in lms.items()}, runs),
    }
    return results


@torch.no_grad()
def stages(checkpoint, package, runs):
    from iblip_model.modeling.instructblip import load_pretrained

    with open(os.path.join(package, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    dtype = torch.bfloat16 if manifest["dtype"] == "bf16" else torch.float32
    model = load_pretrained(checkpoint, dtype).eval()
    files = {k: os.path.join(package, v) for k, v in manifest["modules"].items()}
    _set_executor(False)
    vision, qformer = torch.jit.load(files["vision_encoder"]), torch.jit.load(files["qformer"])
    size = manifest["image"]["size"]
    pixels = torch.randn(1, 3, size, size)
    image_embeds = vision(pixels)
    ids = torch.randint(1, manifest["qformer_vocab_size"], (1, 12))
    mask = torch.ones_like(ids)
    queries = model.query_tokens.expand(1, -1, -1)
    results = {
        "vision encoder": side_by_side({
            "eager": lambda: model.vision_model(pixels.to(dtype)),
            "package": lambda: vision(pixels)}, runs),
        "Q-Former + projection": side_by_side({
            "eager": lambda: model.language_projection(model.qformer(
                ids, mask, queries, image_embeds.to(dtype))[:, :queries.shape[1]]),
            "package": lambda: qformer(image_embeds, ids, mask)}, runs),
    }
    with torch.profiler.profile() as profile:
        vision(pixels)
    events = profile.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    products = sum(e.self_cpu_time_total for e in events if e.key in ("aten::addmm", "aten::bmm", "aten::mm"))
    results["package vision pass, profiled"] = {
        "all ops": total / 1000, "matrix products": products / 1000,
        "share, %": 100 * products / max(total, 1)}
    return results


def _linear_weights(language_model):
    """The weights decode_paged passes to iblip::linear, in graph order (the
    frozen module's constants: the real ones, each read once a step)."""
    weights = []
    for node in language_model.decode_paged.graph.nodes():
        if node.kind() == "iblip::linear":
            weight = node.inputsAt(1).toIValue()
            if weight is not None:
                weights.append(weight)
    return weights


@torch.no_grad()
def linear(package, runs, rows_list, context):
    with open(os.path.join(package, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    if "iblip::linear" not in manifest.get("custom_ops", []):
        raise SystemExit(f"{package}: its language model does not call iblip::linear (a bf16 export)")
    _set_executor(False)
    lm = torch.jit.load(os.path.join(package, manifest["modules"]["language_model"]))
    results = {}
    weights = _linear_weights(lm)
    for rows in rows_list:
        # Every weight once, in order, as a decode step reads them: the
        # weights come from memory, not from the cache a repeated call sees.
        inputs = {w.shape[1]: torch.randn(rows, w.shape[1]).to(torch.bfloat16) for w in weights}
        megabytes = sum(w.numel() for w in weights) * 2 / 1e6
        times = side_by_side({
            "iblip::linear": lambda: [torch.ops.iblip.linear(inputs[w.shape[1]], w, None) for w in weights],
            "aten::linear": lambda: [torch.nn.functional.linear(inputs[w.shape[1]], w) for w in weights]},
            runs)
        times["iblip GB/s"] = megabytes / times["iblip::linear"]
        times["aten GB/s"] = megabytes / times["aten::linear"]
        results[f"all {len(weights)} weights in turn, {rows} rows"] = times
    for outputs, depth in sorted({tuple(w.shape) for w in weights}):
        weight = torch.randn(outputs, depth).to(torch.bfloat16)
        megabytes = weight.numel() * 2 / 1e6
        for rows in rows_list:
            x = torch.randn(rows, depth).to(torch.bfloat16)
            times = side_by_side({"iblip::linear": lambda: torch.ops.iblip.linear(x, weight, None),
                                  "aten::linear": lambda: torch.nn.functional.linear(x, weight)}, runs)
            times["iblip GB/s"] = megabytes / times["iblip::linear"]
            times["aten GB/s"] = megabytes / times["aten::linear"]
            results[f"{outputs}x{depth}, {rows} rows"] = times
    for rows in rows_list:
        paged = PagedInputs(manifest, rows, context)
        results[f"decode_paged (batch {rows}, context {context})"] = side_by_side({
            "package": lambda: lm.decode_paged(paged.ids, paged.positions, paged.slot_mapping,
                                               paged.tables, paged.keys, paged.values)}, runs)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["executors", "fusion", "stages", "linear"])
    parser.add_argument("--package")
    parser.add_argument("--checkpoint")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--prompt", type=int, default=24, help="prompt tokens after the queries")
    parser.add_argument("--context", type=int, default=256, help="cached positions per decode row")
    parser.add_argument("--batch", type=int, default=4, help="decode rows (besides batch 1)")
    parser.add_argument("--rows", default="1,2,4,8,16,32", help="linear: rows per call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--legacy", action="store_true", help="fusion: under the legacy executor")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"operators: {'C++' if ops.native_kernel_loaded() else 'Python references'}; "
          f"{args.threads} threads")
    if args.what == "executors":
        results = executors(args.package, args.runs, args.prompt, args.context, args.batch)
    elif args.what == "stages":
        results = stages(args.checkpoint, args.package, args.runs)
    elif args.what == "linear":
        results = linear(args.package, args.runs, [int(r) for r in args.rows.split(",")], args.context)
    else:
        _set_executor(not args.legacy)
        results = fusion(args.checkpoint, args.dtype, args.runs, args.prompt, args.context, args.batch)
    for name, times in results.items():
        print(f"{name:40s} " + "  ".join(
            f"{k} {v:8.2f}" + ("" if k.endswith(("%", "/s")) else " ms") for k, v in times.items()))


if __name__ == "__main__":
    main()
