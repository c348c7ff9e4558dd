// The C++ kernel of iblip::paged_attention, called through the dispatcher as
// TorchScript calls it, against a naive float64 computation over the
// gathered positions: fp32 and bf16, GQA, blocks out of order, lengths that
// end mid-block, T5's bias, empty rows, and the inputs it must refuse. The
// ATen-only version CUDA runs (PagedAttentionGather) is checked here on the
// CPU against the same computation.

#include "model/runtime/paged_attention_op.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/runtime/paged_attention_gather.h"

namespace iblip::model {
namespace {

using PagedAttentionFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&, const at::Tensor&, double,
                                    const c10::optional<at::Tensor>&);

at::Tensor CallOp(const at::Tensor& query, const at::Tensor& keys, const at::Tensor& values,
                  const at::Tensor& tables, const at::Tensor& lengths, double scale,
                  const c10::optional<at::Tensor>& bias) {
  RegisterPagedAttention();
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("iblip::paged_attention", "")
                             .typed<PagedAttentionFn>();
  return op.call(query, keys, values, tables, lengths, scale, bias);
}

// softmax(scale * q.K^T + bias) V per row and head, in float64, over the
// row's positions gathered in order from its blocks.
at::Tensor NaiveAttention(const at::Tensor& query, const at::Tensor& keys,
                          const at::Tensor& values, const at::Tensor& tables,
                          const std::vector<int64_t>& lengths, double scale,
                          const c10::optional<at::Tensor>& bias) {
  const int64_t block_size = keys.size(1);
  const int64_t heads = query.size(1);
  const int64_t kv_heads = keys.size(2);
  const at::Tensor flat_keys = keys.flatten(0, 1).to(at::kDouble);  // [NB*BS, KV, D]
  const at::Tensor flat_values = values.flatten(0, 1).to(at::kDouble);
  at::Tensor out = at::zeros(query.sizes(), query.options().dtype(at::kDouble));
  for (int64_t b = 0; b < query.size(0); ++b) {
    if (lengths[b] == 0) continue;
    std::vector<int64_t> slots;
    for (int64_t p = 0; p < lengths[b]; ++p) {
      slots.push_back(tables[b][p / block_size].item<int64_t>() * block_size + p % block_size);
    }
    const at::Tensor index = at::tensor(slots, at::kLong);
    const at::Tensor k = flat_keys.index_select(0, index);  // [S, KV, D]
    const at::Tensor v = flat_values.index_select(0, index);
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t kv = h / (heads / kv_heads);
      at::Tensor scores = at::matmul(k.select(1, kv), query[b][h].to(at::kDouble)) * scale;
      if (bias.has_value()) {
        scores = scores + (*bias)[b][h].slice(0, 0, lengths[b]).to(at::kDouble);
      }
      out[b][h] = at::matmul(at::softmax(scores, 0), v.select(1, kv));
    }
  }
  return out;
}

struct Case {
  const char* name;
  at::ScalarType dtype;
  int64_t heads, kv_heads, head_dim, block_size;
  std::vector<int64_t> lengths;
  bool with_bias;
};

class PagedAttentionOpTest : public ::testing::TestWithParam<Case> {};

TEST_P(PagedAttentionOpTest, MatchesNaiveAttention) {
  const Case& c = GetParam();
  at::manual_seed(7);
  const int64_t rows = static_cast<int64_t>(c.lengths.size());
  int64_t widest = 0;
  int64_t needed = 0;
  for (int64_t n : c.lengths) {
    widest = std::max(widest, (n + c.block_size - 1) / c.block_size);
    needed += (n + c.block_size - 1) / c.block_size;
  }
  const int64_t num_blocks = needed + 3;
  // Large values everywhere: a read of an unused slot would show.
  const at::Tensor keys =
      at::randn({num_blocks, c.block_size, c.kv_heads, c.head_dim}).mul(3).to(c.dtype);
  const at::Tensor values =
      at::randn({num_blocks, c.block_size, c.kv_heads, c.head_dim}).mul(3).to(c.dtype);
  const at::Tensor query = at::randn({rows, c.heads, c.head_dim}).to(c.dtype);
  // Rows take shuffled blocks; table entries past a row's need stay garbage.
  const at::Tensor order = at::randperm(num_blocks, at::kLong);
  at::Tensor tables = at::full({rows, widest + 1}, -5, at::kLong);
  int64_t next = 0;
  for (int64_t b = 0; b < rows; ++b) {
    for (int64_t j = 0; j < (c.lengths[b] + c.block_size - 1) / c.block_size; ++j) {
      tables[b][j] = order[next++];
    }
  }
  const int64_t longest = *std::max_element(c.lengths.begin(), c.lengths.end());
  c10::optional<at::Tensor> bias;
  if (c.with_bias) bias = at::randn({rows, c.heads, longest + 2});
  const double scale = 0.125;

  // The work splits differently with the thread count (rows, runs of kv
  // heads); each head's arithmetic must not change.
  std::vector<at::Tensor> outs;
  const int saved_threads = at::get_num_threads();
  for (int threads : {1, 2, 3}) {
    at::set_num_threads(threads);
    outs.push_back(
        CallOp(query, keys, values, tables, at::tensor(c.lengths, at::kLong), scale, bias));
  }
  at::set_num_threads(saved_threads);
  const at::Tensor& out = outs[0];
  EXPECT_TRUE(at::equal(outs[1], out));
  EXPECT_TRUE(at::equal(outs[2], out));
  ASSERT_EQ(out.scalar_type(), c.dtype);
  ASSERT_EQ(out.sizes(), query.sizes());
  const at::Tensor expected = NaiveAttention(query, keys, values, tables, c.lengths, scale, bias);
  // fp32: float32 accumulation only; bf16: plus the output's rounding (8 bits).
  const double tolerance = c.dtype == at::kFloat ? 2e-5 : 1e-2;
  const double scale_of_values = expected.abs().max().item<double>();
  const double diff = (out.to(at::kDouble) - expected).abs().max().item<double>();
  EXPECT_LE(diff, tolerance * scale_of_values) << "max |diff| " << diff;

  // The CUDA fallback, same inputs (garbage table entries included).
  const at::Tensor gathered =
      PagedAttentionGather(query, keys, values, tables,
                           at::tensor(c.lengths, at::kLong), scale, bias);
  ASSERT_EQ(gathered.scalar_type(), c.dtype);
  ASSERT_EQ(gathered.sizes(), query.sizes());
  const double gather_diff =
      (gathered.to(at::kDouble) - expected).abs().max().item<double>();
  EXPECT_LE(gather_diff, tolerance * scale_of_values)
      << "gather: max |diff| " << gather_diff;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, PagedAttentionOpTest,
    ::testing::Values(
        // One block, exactly full blocks, lengths ending mid-block.
        Case{"Fp32Lengths", at::kFloat, 4, 4, 64, 16, {1, 16, 37, 100}, false},
        Case{"Fp32Gqa", at::kFloat, 8, 2, 64, 16, {5, 70, 33}, false},
        // head_dim off the vector width, T5's bias.
        Case{"Fp32OddHeadDimBias", at::kFloat, 6, 3, 20, 4, {9, 1, 14}, true},
        Case{"Fp32EmptyRow", at::kFloat, 4, 4, 16, 8, {0, 12}, false},
        Case{"Bf16Gqa", at::kBFloat16, 8, 2, 64, 16, {5, 70, 33}, false},
        Case{"Bf16Bias", at::kBFloat16, 4, 4, 32, 16, {17, 3}, true},
        Case{"Bf16Llama7bHeads", at::kBFloat16, 32, 32, 128, 16, {300}, false}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

TEST(PagedAttentionOp, EmptyRowGivesZeros) {
  const at::Tensor keys = at::randn({2, 4, 1, 8});
  const at::Tensor out = CallOp(at::randn({1, 2, 8}), keys, keys, at::zeros({1, 1}, at::kLong),
                                at::zeros({1}, at::kLong), 1.0, c10::nullopt);
  EXPECT_TRUE(out.eq(0).all().item<bool>());
  const at::Tensor gathered = PagedAttentionGather(
      at::randn({1, 2, 8}), keys, keys, at::zeros({1, 1}, at::kLong),
      at::zeros({1}, at::kLong), 1.0, c10::nullopt);
  EXPECT_TRUE(gathered.eq(0).all().item<bool>());
}

TEST(PagedAttentionGather, RefusesMismatchedInputs) {
  const at::Tensor keys = at::randn({3, 4, 2, 8});
  const at::Tensor tables = at::zeros({1, 1}, at::kLong);
  const at::Tensor lengths = at::ones({1}, at::kLong);
  const c10::optional<at::Tensor> none;
  EXPECT_THROW(PagedAttentionGather(at::randn({1, 2, 8}).to(at::kBFloat16),
                                    keys, keys, tables, lengths, 1.0, none),
               c10::Error);  // dtype differs from the cache's
  EXPECT_THROW(PagedAttentionGather(at::randn({1, 3, 8}), keys, keys, tables,
                                    lengths, 1.0, none),
               c10::Error);  // 3 heads over 2 kv heads
  EXPECT_THROW(PagedAttentionGather(at::randn({1, 2, 4}), keys, keys, tables,
                                    lengths, 1.0, none),
               c10::Error);  // head_dim
  EXPECT_THROW(PagedAttentionGather(at::randn({1, 2, 8}), keys, keys,
                                    tables.to(at::kInt), lengths, 1.0, none),
               c10::Error);
  EXPECT_THROW(PagedAttentionGather(at::randn({1, 2, 8}), keys, keys, tables,
                                    lengths, 1.0, at::zeros({1, 3, 4})),
               c10::Error);  // bias heads
}

TEST(PagedAttentionGather, BlockIndicesOutsideThePoolStayInsideIt) {
  // The fallback clamps instead of checking (no device sync): a bad table
  // reads a block of the pool, never memory outside it, and gives numbers.
  const at::Tensor keys = at::randn({3, 4, 2, 8});
  const at::Tensor tables =
      at::tensor(std::vector<int64_t>{0, 7, -2}, at::kLong).view({1, 3});
  const at::Tensor out = PagedAttentionGather(
      at::randn({1, 2, 8}), keys, keys, tables,
      at::tensor(std::vector<int64_t>{12}, at::kLong), 1.0, c10::nullopt);
  EXPECT_TRUE(out.isfinite().all().item<bool>());
}

TEST(PagedAttentionOp, RefusesIndicesOutsideThePool) {
  const at::Tensor keys = at::randn({3, 4, 2, 8});
  const at::Tensor query = at::randn({1, 2, 8});
  const at::Tensor lengths = at::tensor(std::vector<int64_t>{6}, at::kLong);
  // Block 3 does not exist (3 blocks), block -1 neither.
  for (int64_t bad : {3, -1}) {
    const at::Tensor tables = at::tensor(std::vector<int64_t>{0, bad}, at::kLong).view({1, 2});
    EXPECT_THROW(CallOp(query, keys, keys, tables, lengths, 1.0, c10::nullopt), c10::Error);
  }
  // More positions than the table has blocks for.
  const at::Tensor narrow = at::zeros({1, 1}, at::kLong);
  EXPECT_THROW(CallOp(query, keys, keys, narrow, lengths, 1.0, c10::nullopt), c10::Error);
  // A bias shorter than the context.
  const at::Tensor wide = at::zeros({1, 2}, at::kLong);
  EXPECT_THROW(CallOp(query, keys, keys, wide, lengths, 1.0, at::zeros({1, 2, 5})), c10::Error);
}

TEST(PagedAttentionOp, RefusesMismatchedInputs) {
  const at::Tensor keys = at::randn({3, 4, 2, 8});
  const at::Tensor tables = at::zeros({1, 1}, at::kLong);
  const at::Tensor lengths = at::ones({1}, at::kLong);
  const c10::optional<at::Tensor> none;
  EXPECT_THROW(CallOp(at::randn({1, 2, 8}).to(at::kBFloat16), keys, keys, tables, lengths, 1.0,
                      none),
               c10::Error);  // dtype differs from the cache's
  EXPECT_THROW(CallOp(at::randn({1, 3, 8}), keys, keys, tables, lengths, 1.0, none),
               c10::Error);  // 3 heads over 2 kv heads
  EXPECT_THROW(CallOp(at::randn({1, 2, 4}), keys, keys, tables, lengths, 1.0, none),
               c10::Error);  // head_dim
  EXPECT_THROW(CallOp(at::randn({1, 2, 8}), keys.transpose(0, 1), keys.transpose(0, 1), tables,
                      lengths, 1.0, none),
               c10::Error);  // a non-contiguous pool slice would be copied: refused
  EXPECT_THROW(CallOp(at::randn({1, 2, 8}), keys, keys, tables.to(at::kInt), lengths, 1.0, none),
               c10::Error);
}

}  // namespace
}  // namespace iblip::model
