"""Engine v2's module methods (model/PACKAGE.md, format_version 2): the
iblip::paged_attention reference, LLaMA and T5 prefill_paged/decode_paged
over a paged KV pool, the vision encoder in pieces, and fused projections,
each against the methods and eager code the fixture parity tests cover."""

import pytest
import torch

from iblip_model import export_modules, hf_config
from iblip_model.modeling.fusion import fuse_linears, fuse_llama_projections
from iblip_model.modeling.llama import LlamaForCausalLM
from iblip_model.modeling.t5 import T5ForConditionalGeneration
from iblip_model.modeling.vision import InstructBlipVisionModel
from iblip_model.ops import paged_attention_reference
from iblip_model.quantize import quantize_linear_layers

BLOCK_SIZE = 4
NUM_BLOCKS = 24


def max_diff(a, b):
    return (a.to(torch.float32) - b.to(torch.float32)).abs().max().item()


def naive_attention(query, keys, values, scale, bias):
    """One row: query [H,D], keys/values [S,KV,D] in position order, bias
    [H,S] or None; float64 for a reference beyond both implementations."""
    heads, kv_heads = query.shape[0], keys.shape[1]
    out = []
    for h in range(heads):
        kv = h // (heads // kv_heads)
        scores = keys[:, kv].double() @ query[h].double() * scale
        if bias is not None:
            scores = scores + bias[h].double()
        out.append(torch.softmax(scores, 0) @ values[:, kv].double())
    return torch.stack(out)


class Pool:
    """A paged pool [L,NB,BS,KV,D] and block tables whose blocks are neither
    contiguous nor in order: sequence i gets every few blocks, backwards."""

    def __init__(self, layers, kv_heads, head_dim, dtype=torch.float32, seed=0):
        shape = (layers, NUM_BLOCKS, BLOCK_SIZE, kv_heads, head_dim)
        # Garbage where nothing was written: a stray read would show.
        generator = torch.Generator().manual_seed(seed)
        self.keys = (torch.randn(shape, generator=generator) * 100).to(dtype)
        self.values = (torch.randn(shape, generator=generator) * 100).to(dtype)
        self.free = list(torch.randperm(NUM_BLOCKS, generator=generator).tolist())

    def allocate(self, positions):
        count = (positions + BLOCK_SIZE - 1) // BLOCK_SIZE
        blocks, self.free = self.free[:count], self.free[count:]
        return torch.tensor(blocks)

    @staticmethod
    def slots(blocks, count):
        return (blocks[:, None] * BLOCK_SIZE + torch.arange(BLOCK_SIZE)).flatten()[:count]

    @staticmethod
    def tables(rows, width):
        """Block tables padded past each row's need with out-of-range ids."""
        table = torch.full((len(rows), width), 10 ** 6, dtype=torch.long)
        for i, blocks in enumerate(rows):
            table[i, : len(blocks)] = blocks
        return table


# -- the operator's Python reference ------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads,kv_heads,with_bias", [(4, 4, False), (8, 2, False), (4, 2, True)])
def test_paged_attention_reference_matches_naive_attention(dtype, heads, kv_heads, with_bias):
    torch.manual_seed(1)
    dim = 16
    pool = Pool(1, kv_heads, dim, dtype)
    lengths = [1, 7, 13, 4]  # unaligned, one block, several blocks
    rows = [pool.allocate(n) for n in lengths]
    query = torch.randn(len(lengths), heads, dim).to(dtype)
    bias = torch.randn(len(lengths), heads, max(lengths) + 3) if with_bias else None
    out = torch.ops.iblip.paged_attention(query, pool.keys[0], pool.values[0],
                                          Pool.tables(rows, 5), torch.tensor(lengths), 0.25, bias)
    assert out.dtype == dtype and out.shape == query.shape
    flat_k = pool.keys[0].view(-1, kv_heads, dim)
    flat_v = pool.values[0].view(-1, kv_heads, dim)
    for b, (n, blocks) in enumerate(zip(lengths, rows)):
        slots = Pool.slots(blocks, n)
        expected = naive_attention(query[b], flat_k[slots], flat_v[slots], 0.25,
                                   bias[b, :, :n] if bias is not None else None)
        tolerance = (1e-5 if dtype == torch.float32 else 0.02) * expected.abs().max().item()
        assert max_diff(out[b], expected) <= tolerance


def test_paged_attention_reference_gives_zeros_for_an_empty_row():
    pool = Pool(1, 2, 8)
    out = paged_attention_reference(torch.randn(2, 2, 8), pool.keys[0], pool.values[0],
                                    torch.tensor([[3], [5]]), torch.tensor([0, 2]), 1.0, None)
    assert torch.equal(out[0], torch.zeros(2, 8)) and out[1].abs().sum() > 0


# -- LLaMA ----------------------------------------------------------------------

LLAMA = hf_config.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              max_position_embeddings=256)


def llama(dtype=torch.float32, fused=False):
    torch.manual_seed(2)
    lm = LlamaForCausalLM(LLAMA).eval()
    if fused:
        fuse_llama_projections(lm)
    return lm.to(dtype)


def llama_pool(dtype=torch.float32):
    return Pool(LLAMA.num_hidden_layers, LLAMA.num_key_value_heads,
                LLAMA.hidden_size // LLAMA.num_attention_heads, dtype)


@torch.no_grad()
def llama_reference(lm, embeds):
    """forward_cached over the whole prompt: last logits, keys, values."""
    t = embeds.shape[1]
    hidden, keys, values = lm.forward_cached(embeds, torch.ones(1, t, dtype=torch.long),
                                             torch.arange(t)[None], None, None)
    return lm.logits(hidden[:, -1]), keys, values


@torch.no_grad()
def prefill_in_chunks(module, embeds, slots, pool, cuts):
    logits = None
    for start, end in zip([0] + cuts, cuts + [embeds.shape[1]]):
        logits = module.prefill_paged(embeds[:, start:end], start, slots, pool.keys, pool.values)
    return logits


def wrapped(lm, script):
    module = export_modules.LlamaLanguageModel(lm).eval()
    if script:
        module = torch.jit.freeze(torch.jit.script(module), preserved_attrs=export_modules.LLAMA_METHODS)
    return module


@pytest.mark.parametrize("script", [False, True])
@pytest.mark.parametrize("cuts", [[], [5], [4, 9]])
def test_llama_chunked_prefill_equals_one_prefill(script, cuts):
    lm = llama()
    embeds = torch.randn(1, 13, LLAMA.hidden_size)
    expected, keys, values = llama_reference(lm, embeds)
    pool = llama_pool()
    blocks = pool.allocate(13)
    slots = Pool.slots(blocks, 13)
    logits = prefill_in_chunks(wrapped(lm, script), embeds, slots, pool, cuts)
    assert logits.shape == (1, LLAMA.vocab_size) and logits.dtype == torch.float32
    assert max_diff(logits, expected) <= 1e-5
    # The pool holds the rotated keys and the values, position by position.
    heads_last = lambda t: t[:, 0].transpose(1, 2)  # noqa: E731  [L,KV,T,D] -> [L,T,KV,D]
    assert max_diff(pool.keys.flatten(1, 2)[:, slots], heads_last(keys)) <= 1e-5
    assert max_diff(pool.values.flatten(1, 2)[:, slots], heads_last(values)) <= 1e-5


@pytest.mark.parametrize("script", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_llama_decode_paged_batches_rows_of_different_lengths(script, fused):
    lm = llama(fused=fused)
    reference_lm = llama()  # the unfused original: fusion must not change the result
    module = wrapped(lm, script)
    pool = llama_pool()
    lengths = [3, 9, 6]
    rows, expected = [], []
    tokens = torch.tensor([[5], [17], [42]])
    with torch.no_grad():
        for b, n in enumerate(lengths):
            embeds = torch.randn(1, n, LLAMA.hidden_size)
            blocks = pool.allocate(n + 1)
            rows.append(blocks)
            logits = module.prefill_paged(embeds, 0, Pool.slots(blocks, n), pool.keys, pool.values)
            first, keys, values = llama_reference(reference_lm, embeds)
            assert max_diff(logits, first) <= 1e-5
            hidden, _, _ = reference_lm.forward_cached(
                reference_lm.model.embed_tokens(tokens[b:b + 1]), torch.ones(1, n + 1, dtype=torch.long),
                torch.tensor([[n]]), keys, values)
            expected.append(reference_lm.logits(hidden[:, -1]))
        positions = torch.tensor(lengths)
        slot_mapping = torch.stack([Pool.slots(blocks, n + 1)[-1] for blocks, n in zip(rows, lengths)])
        logits = module.decode_paged(tokens, positions, slot_mapping, Pool.tables(rows, 4),
                                     pool.keys, pool.values)
    assert logits.shape == (3, LLAMA.vocab_size)
    assert max_diff(logits, torch.cat(expected)) <= 1e-5


@torch.no_grad()
def test_llama_bf16_paged_methods_are_close_to_the_fp32_ones():
    embeds = torch.randn(1, 10, LLAMA.hidden_size)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        module = wrapped(llama(dtype, fused=True), script=True)
        pool = llama_pool(dtype)
        blocks = pool.allocate(11)
        slots = Pool.slots(blocks, 11)
        first = prefill_in_chunks(module, embeds, slots, pool, [6])
        second = module.decode_paged(torch.tensor([[7]]), torch.tensor([10]), slots[10:11],
                                     blocks[None], pool.keys, pool.values)
        assert pool.keys.dtype == dtype
        results[dtype] = torch.cat([first, second])
    reference = results[torch.float32]
    assert max_diff(results[torch.bfloat16], reference) <= 0.05 * reference.abs().max().item()


def test_fused_int8_projection_equals_the_separate_ones():
    torch.manual_seed(4)
    layers = torch.nn.Sequential(torch.nn.Linear(32, 24), torch.nn.Linear(32, 8), torch.nn.Linear(32, 8))
    quantize_linear_layers(layers)
    fused = fuse_linears(list(layers))
    x = torch.randn(3, 32)
    separate = torch.cat([layer(x) for layer in layers], dim=-1)
    assert max_diff(fused(x), separate) <= 1e-5


# -- T5 ---------------------------------------------------------------------

T5 = hf_config.T5Config(vocab_size=83, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
                        num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=False)


def t5(script):
    torch.manual_seed(5)
    model = T5ForConditionalGeneration(T5).eval()
    module = export_modules.T5LanguageModel(model).eval()
    if script:
        module = torch.jit.freeze(torch.jit.script(module), preserved_attrs=export_modules.T5_METHODS)
    return model, module


@pytest.mark.parametrize("script", [False, True])
@torch.no_grad()
def test_t5_paged_methods_equal_the_cached_decoder(script):
    model, module = t5(script)
    pool = Pool(T5.num_decoder_layers, T5.num_heads, T5.d_kv)
    prompts = [7, 12]  # encoder lengths
    steps = [[4, 9, 2], [11, 3, 5, 6]]  # tokens fed after the start token, per row
    rows = []
    expected = []  # per row: the logits of each step after the first
    for b, (t, fed) in enumerate(zip(prompts, steps)):
        embeds = torch.randn(1, t, T5.d_model)
        cross_blocks, self_blocks = pool.allocate(t), pool.allocate(len(fed) + 1)
        rows.append((cross_blocks, self_blocks, t))
        first = module.prefill_paged(embeds, Pool.slots(cross_blocks, t),
                                     int(Pool.slots(self_blocks, 1)[0]), 0, pool.keys, pool.values)
        mask = torch.ones(1, t, dtype=torch.long)
        cross_k, cross_v = model.cross_kv(model.encode(embeds, mask))
        ids = torch.tensor([[0] + fed])
        logits, keys, values = model.decode_cached(ids[:, :1], torch.tensor([[0]]), torch.tensor([[1]]),
                                                   None, None, cross_k, cross_v, mask)
        assert max_diff(first, logits) <= 1e-5
        row = []
        for step in range(1, len(fed) + 1):
            positions = torch.arange(step + 1)[None]
            logits, k, v = model.decode_cached(ids[:, step:step + 1], positions,
                                               torch.ones_like(positions), keys, values,
                                               cross_k, cross_v, mask)
            keys, values = torch.cat([keys, k], 3), torch.cat([values, v], 3)
            row.append(logits)
        expected.append(row)
    # Decode both rows together, step by step (the shorter row stops early).
    for step in range(1, max(len(fed) for fed in steps) + 1):
        live = [b for b in range(2) if step <= len(steps[b])]
        positions = torch.tensor([step for _ in live])
        slot_mapping = torch.stack([Pool.slots(rows[b][1], step + 1)[-1] for b in live])
        logits = module.decode_paged(
            torch.tensor([[steps[b][step - 1]] for b in live]), positions, slot_mapping,
            Pool.tables([rows[b][1] for b in live], 3), Pool.tables([rows[b][0] for b in live], 4),
            torch.tensor([rows[b][2] for b in live]), pool.keys, pool.values)
        for i, b in enumerate(live):
            assert max_diff(logits[i], expected[b][step - 1][0]) <= 1e-5, (step, b)


# -- vision -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_vision_pieces_equal_forward_exactly(dtype):
    torch.manual_seed(6)
    config = hf_config.VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=5,
                                    num_attention_heads=4, image_size=28, patch_size=14)
    eager = InstructBlipVisionModel(config).eval().to(dtype)
    module = torch.jit.freeze(torch.jit.script(export_modules.VisionEncoder(eager).eval()),
                              preserved_attrs=export_modules.VISION_METHODS)
    pixels = torch.randn(2, 3, 28, 28)
    hidden = module.embed(pixels)
    assert hidden.dtype == dtype and hidden.shape == (2, 5, 32)
    for start, end in [(0, 2), (2, 3), (3, 5)]:
        hidden = module.run_layers(hidden, start, end)
    pieces = module.finish(hidden)
    assert pieces.dtype == torch.float32
    for _ in range(2):  # the profiling executor optimizes on the second run
        assert torch.equal(pieces, module(pixels))
    assert torch.equal(pieces, eager(pixels).to(torch.float32))
    assert torch.equal(module.run_layers(hidden, 3, 3), hidden)  # an empty piece is a no-op

