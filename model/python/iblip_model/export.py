"""model/export: Hugging Face InstructBLIP checkpoint -> model package.

    model/export --checkpoint HF_DIR --output PACKAGE_DIR [--dtype fp32|bf16|int8]

Weight formats: fp32; bf16 (every weight and activation bfloat16, fp32 at
module boundaries); int8 (dynamic quantization: every Linear layer's weight
int8 per output channel, its input quantized per call, everything else
fp32). On a CPU with AVX-512 BF16/VNNI the last two run batch-1 decoding,
which reads every weight once per token, several times faster.

Writes into a staging directory beside PACKAGE_DIR and renames it into place
only after every TorchScript module was verified against the eager model, so
a failed export leaves no package behind."""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time

import torch

from iblip_model import export_modules, ops, tokenizer_files  # noqa: F401  (ops: loading needs it)
from iblip_model.hf_config import CheckpointError, load_config
from iblip_model.modeling.float32_norms import layer_norms_in_float32
from iblip_model.modeling.fusion import fuse_llama_projections
from iblip_model.modeling.op_linear import route_linears_through_op
from iblip_model.modeling.instructblip import load_pretrained

FORMAT_VERSION = 2
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}
# TorchScript vs eager on the same weights: only operator fusion may differ.
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "int8": 1e-3}
T5_MAX_CONTEXT = 1024  # relative positions: no table limit; bounds the caches
# The paged pool the verification runs the paged methods over: small blocks,
# handed out backwards so no sequence's blocks are contiguous or in order.
VERIFY_BLOCK_SIZE = 4


class Progress:
    def __init__(self, log):
        self.log = log
        self.start = time.monotonic()

    def step(self, message):
        self.log(f"[export {time.monotonic() - self.start:6.1f}s] {message}")


def _script(module, methods, frozen=True):
    scripted = torch.jit.script(module.eval())
    if frozen:
        scripted = torch.jit.freeze(scripted, preserved_attrs=methods)
    return scripted


def _sample_inputs(config, generator):
    size = config.vision.image_size
    pixels = torch.randn(1, 3, size, size, generator=generator)
    qformer_ids = torch.randint(1, config.qformer.vocab_size - 1, (1, 7), generator=generator)
    vocab = config.text.vocab_size
    prompt_ids = torch.randint(3, vocab, (1, 6), generator=generator)
    return pixels, qformer_ids, prompt_ids


def _max_diff(a, b):
    return (a.to(torch.float32) - b.to(torch.float32)).abs().max().item()


def _verification_pool(lm_config, lm_family, dtype, positions):
    """Zeroed pool [L,NB,BS,KV,D] in the model's dtype with room for
    `positions`, and the slots of positions 0.. in blocks taken backwards."""
    llama = lm_family == "llama"
    layers = lm_config.num_hidden_layers if llama else lm_config.num_decoder_layers
    kv_heads = lm_config.num_key_value_heads if llama else lm_config.num_heads
    head_dim = lm_config.hidden_size // lm_config.num_attention_heads if llama else lm_config.d_kv
    blocks = (positions + VERIFY_BLOCK_SIZE - 1) // VERIFY_BLOCK_SIZE
    shape = (layers, blocks, VERIFY_BLOCK_SIZE, kv_heads, head_dim)
    order = torch.arange(blocks - 1, -1, -1)
    slots = (order[:, None] * VERIFY_BLOCK_SIZE + torch.arange(VERIFY_BLOCK_SIZE)).flatten()
    return torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype), order, slots


def _run_paged_stages(lm, config, embeds, next_ids, dtype):
    """The paged methods on the same inputs: LLaMA prefill in two chunks and
    one decode step; T5 prefill (encoder, cross keys/values, first step) and
    one decode step, cross and self blocks sharing the pool."""
    t = embeds.shape[1]
    if config.lm_family == "llama":
        keys, values, order, slots = _verification_pool(config.text, "llama", dtype, t + 1)
        half = t // 2
        lm.prefill_paged(embeds[:, :half], 0, slots, keys, values)
        prefill = lm.prefill_paged(embeds[:, half:], half, slots, keys, values)
        decode = lm.decode_paged(next_ids, torch.tensor([t]), slots[t:t + 1], order[None], keys, values)
        return {"paged_prefill_logits": prefill, "paged_decode_logits": decode}
    keys, values, order, slots = _verification_pool(config.text, "t5", dtype, t + 2 * VERIFY_BLOCK_SIZE)
    cross_blocks = (t + VERIFY_BLOCK_SIZE - 1) // VERIFY_BLOCK_SIZE
    cross_slots, self_slots = slots[:t], slots[cross_blocks * VERIFY_BLOCK_SIZE:]
    start = config.text.decoder_start_token_id
    prefill = lm.prefill_paged(embeds, cross_slots, int(self_slots[0]), start, keys, values)
    decode = lm.decode_paged(next_ids, torch.tensor([1]), self_slots[1:2], order[None, cross_blocks:],
                             order[None, :cross_blocks], torch.tensor([t]), keys, values)
    return {"paged_first_step_logits": prefill, "paged_decode_logits": decode}


def _run_stages(vision, soft_prompt, embed, lm, config, inputs, dtype):
    """The whole model on the sample inputs, stage by stage: vision encoder
    (whole and in pieces), soft prompt, then LLaMA prefill and one decode
    step, or T5 encoder, cross keys/values and two decode steps, and the
    same through the paged methods. `vision` and `lm` have the exported
    methods (TorchScript modules or their eager wrappers)."""
    pixels, qformer_ids, prompt_ids = inputs
    qformer_mask = torch.ones_like(qformer_ids)
    out = {"image_embeds": vision(pixels)}
    layers = config.vision.num_hidden_layers
    hidden = vision.run_layers(vision.embed(pixels), 0, layers // 2)
    out["image_embeds_in_pieces"] = vision.finish(vision.run_layers(hidden, layers // 2, layers))
    soft = soft_prompt(out["image_embeds"], qformer_ids, qformer_mask)
    out["soft_prompt"] = soft
    embeds = torch.cat([soft, embed(prompt_ids)], dim=1)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)
    next_ids = prompt_ids[:, -1:]
    if config.lm_family == "llama":
        positions = torch.arange(embeds.shape[1])[None]
        out["prefill_logits"], keys, values = lm.prefill(embeds, mask, positions)
        mask2 = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], dim=1)
        out["decode_logits"], _, _ = lm.decode(next_ids, mask2, positions[:, -1:] + 1, keys, values)
    else:
        out["encoder"] = encoded = lm.encode(embeds, mask)
        cross_k, cross_v = lm.cross_kv(encoded)
        start = torch.full((1, 1), config.text.decoder_start_token_id, dtype=torch.long)
        pos, self_mask = torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.long)
        out["first_step_logits"], keys, values = lm.decode(start, pos, self_mask, None, None,
                                                           cross_k, cross_v, mask)
        pos2, mask2 = torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.long)
        out["decode_logits"], _, _ = lm.decode(next_ids, pos2, mask2, keys, values,
                                               cross_k, cross_v, mask)
    out.update(_run_paged_stages(lm, config, embeds, next_ids, dtype))
    return {k: v.to(torch.float32) for k, v in out.items()}


@torch.no_grad()
def _eager_outputs(model, config, dtype):
    """The sample inputs and what the eager model makes of them."""
    inputs = _sample_inputs(config, torch.Generator().manual_seed(0))
    wrapper = (export_modules.LlamaLanguageModel if config.lm_family == "llama"
               else export_modules.T5LanguageModel)(model.language_model)
    projector = export_modules.QFormerProjector(model)
    vision = export_modules.VisionEncoder(model.vision_model)
    return inputs, _run_stages(vision, projector, wrapper.embed, wrapper, config, inputs,
                               DTYPES[dtype])


@torch.no_grad()
def _verify(package_dir, files, config, inputs, eager, dtype, progress):
    """Loads the saved TorchScript modules (the eager model is gone by then:
    a 7B model is not in memory twice) and compares each stage's output
    with the eager model's; returns the max |diff| of each."""
    load = lambda key: torch.jit.load(os.path.join(package_dir, files[key]))  # noqa: E731
    lm = load("language_model")
    scripted = _run_stages(load("vision_encoder"), load("qformer"), lm.embed, lm, config, inputs,
                           DTYPES[dtype])
    diffs = {k: _max_diff(scripted[k], eager[k]) for k in eager}
    worst = max(diffs, key=diffs.get)
    progress.step("verified TorchScript against eager: "
                  + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    tolerance = TOLERANCE[dtype]
    if diffs[worst] > tolerance:
        raise CheckpointError(f"verification failed: {worst} differs by {diffs[worst]:.3e} "
                              f"(tolerance {tolerance})")
    return diffs


MODULE_FILES = {"vision_encoder": "vision_encoder.pt", "qformer": "qformer.pt",
                "language_model": "language_model.pt"}
_child_messages = None  # the child process's way to report progress


def _report(message):
    _child_messages.put(message)


def _write_modules(checkpoint_dir, staging, dtype):
    """Runs in a child process: loads the weights, scripts, freezes and saves
    the three modules, and returns the sample inputs with the eager model's
    outputs. Frozen graphs keep their constants (the weights) in the
    process-wide TorchScript compilation unit for the life of the process,
    so the process that loads the saved modules back to verify them must be
    another one: a 7B model would otherwise be in memory twice (it ran out
    of memory on a 24 GiB machine)."""
    config = load_config(checkpoint_dir)
    model = load_pretrained(checkpoint_dir, DTYPES[dtype], quantize_int8=dtype == "int8")
    _report(f"loaded the weights as {dtype}"
            + (" (Linear layers quantized per output channel as they load)" if dtype == "int8" else ""))
    path = lambda key: os.path.join(staging, MODULE_FILES[key])  # noqa: E731
    # The eager reference below runs these too: they change speed, not the
    # model (see float32_norms).
    layer_norms_in_float32(model)
    _script(export_modules.VisionEncoder(model.vision_model),
            export_modules.VISION_METHODS).save(path("vision_encoder"))
    _report("scripted the vision encoder")
    _script(export_modules.QFormerProjector(model), []).save(path("qformer"))
    _report("scripted the Q-Former and projection")
    # The reference outputs come from the model as the checkpoint defines
    # it, before the projections are fused for speed.
    outputs = _eager_outputs(model, config, dtype)
    llama = config.lm_family == "llama"
    if llama:
        fuse_llama_projections(model.language_model)
    # Before the wrapper is made: it keeps references to the layers.
    if dtype == "bf16":
        _report(f"{route_linears_through_op(model.language_model)} Linear layers of the language "
                "model call iblip::linear")
    wrapper, methods = ((export_modules.LlamaLanguageModel, export_modules.LLAMA_METHODS) if llama
                        else (export_modules.T5LanguageModel, export_modules.T5_METHODS))
    lm = wrapper(model.language_model)
    _script(lm, methods).save(path("language_model"))
    _report(f"scripted the language model ({', '.join(methods)})")
    return outputs


def _set_messages(queue):
    global _child_messages
    _child_messages = queue


def _in_child_process(function, progress, *args):
    """function(*args) in a fresh (spawned) process, its progress messages
    relayed to `progress` as they come; its exceptions re-raised here."""
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    relay = threading.Thread(target=lambda: [progress.step(m) for m in iter(messages.get, None)],
                             daemon=True)
    relay.start()
    try:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context, initializer=_set_messages,
                                                    initargs=(messages,)) as pool:
            return pool.submit(function, *args).result()
    except concurrent.futures.process.BrokenProcessPool as e:
        raise CheckpointError("the export process died (out of memory?)") from e
    finally:
        messages.put(None)
        relay.join()


def _prepare_output(output_dir):
    """A staging directory beside output_dir. Refuses to replace a directory
    that is neither empty nor a model package."""
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir):
        if not os.path.isdir(output_dir):
            raise CheckpointError(f"--output {output_dir}: exists and is not a directory")
        if os.listdir(output_dir) and not os.path.isfile(os.path.join(output_dir, "manifest.json")):
            raise CheckpointError(f"--output {output_dir}: not empty and not a model package; "
                                  "refusing to replace it")
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    os.chmod(staging, 0o755)  # mkdtemp makes it private
    return output_dir, staging


def export(checkpoint_dir, output_dir, dtype="fp32", log=print, model_id=None):
    """Exports one checkpoint; returns the manifest. Raises CheckpointError."""
    if dtype not in DTYPES:
        raise CheckpointError(f"--dtype {dtype}: expected one of {sorted(DTYPES)}")
    progress = Progress(log)
    config = load_config(checkpoint_dir)
    progress.step(f"config: {config.lm_family} language model, {config.num_query_tokens} queries, "
                  f"vision {config.vision.num_hidden_layers}x{config.vision.hidden_size}")
    lm_section, lm_files = tokenizer_files.lm_tokenizer(checkpoint_dir, config)
    qformer_section, qformer_files = tokenizer_files.qformer_tokenizer(checkpoint_dir, config)
    image_section = tokenizer_files.image_processor(checkpoint_dir, config)
    generation = tokenizer_files.generation_settings(checkpoint_dir, config, lm_section)

    output_dir, staging = _prepare_output(output_dir)
    try:
        files = dict(MODULE_FILES)
        inputs, eager = _in_child_process(_write_modules, progress, checkpoint_dir, staging, dtype)
        for name, source in {**lm_files, **qformer_files}.items():
            shutil.copyfile(source, os.path.join(staging, name))
        diffs = _verify(staging, files, config, inputs, eager, dtype, progress)

        text = config.text
        llama = config.lm_family == "llama"
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_id": model_id or config.raw.get("_name_or_path") or os.path.basename(
                os.path.normpath(checkpoint_dir)),
            "lm_family": config.lm_family,
            "dtype": dtype,
            "num_query_tokens": config.num_query_tokens,
            "lm_vocab_size": text.vocab_size,
            "lm_hidden_size": text.hidden_size if llama else text.d_model,
            "lm_num_layers": text.num_hidden_layers if llama else text.num_decoder_layers,
            # KV cache geometry per layer: heads x head_dim.
            "lm_kv_heads": text.num_key_value_heads if llama else text.num_heads,
            "lm_head_dim": text.hidden_size // text.num_attention_heads if llama else text.d_kv,
            "qformer_vocab_size": config.qformer.vocab_size,
            "vision_num_layers": config.vision.num_hidden_layers,
            "paged_kv_cache": {
                # One pool per package: keys and values, each this shape.
                "layout": ["layers", "blocks", "block_size", "kv_heads", "head_dim"],
                "dtype": "bf16" if dtype == "bf16" else "fp32",
                "layers": text.num_hidden_layers if llama else text.num_decoder_layers,
                "kv_heads": text.num_key_value_heads if llama else text.num_heads,
                "head_dim": text.hidden_size // text.num_attention_heads if llama else text.d_kv,
                # T5: each sequence's encoder keys/values (per decoder layer)
                # live in the same pool, in blocks of their own.
                "cross_attention_blocks": not llama,
            },
            "custom_ops": ["iblip::paged_attention"] + (["iblip::linear"] if dtype == "bf16" else []),
            "max_context_tokens": text.max_position_embeddings if llama else T5_MAX_CONTEXT,
            "prompt_layout": "image_tokens" if config.image_token_index is not None else "prepend",
            "image_token_index": config.image_token_index,
            "image": image_section,
            "lm_tokenizer": lm_section,
            "qformer_tokenizer": qformer_section,
            "generation": generation,
            "modules": files,
            "export": {"source": os.path.abspath(checkpoint_dir), "torch": torch.__version__,
                       "verification_max_abs_diff": diffs},
        }
        with open(os.path.join(staging, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, ensure_ascii=False)
            f.write("\n")
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.rename(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(os.path.getsize(os.path.join(output_dir, n)) for n in os.listdir(output_dir))
    progress.step(f"wrote {output_dir} ({size / 1e6:.1f} MB)")
    return manifest


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="model/export",
        description="Turns a Hugging Face InstructBLIP checkpoint into a model package.")
    parser.add_argument("--checkpoint", required=True,
                        help="Hugging Face model directory (config.json, weights, tokenizers)")
    parser.add_argument("--output", required=True, help="package directory to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="weight format of the exported modules: fp32 (default), bf16, or "
                             "int8 (dynamically quantized Linear layers)")
    parser.add_argument("--model-id", help="model id to report (default: the directory name)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        export(args.checkpoint, args.output, args.dtype, model_id=args.model_id)
    except CheckpointError as e:
        print(f"model/export: error: {e}", file=sys.stderr)
        return 1
    return 0
