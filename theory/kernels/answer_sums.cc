// The sums of sampled answers in one pass over the score vectors (an XLA FFI custom call, CPU).
//
// For every prompt i (all leading axes of the buffers flattened), with rewards r_ij and score
// vectors s_ij in R^D (j = 1 .. n):
//
//   G_i = sum_j r_ij s_ij          (..., D)
//   Q_i = sum_j r_ij ||s_ij||^2    (...)
//
// Each row s_ij is read once from memory: it is added into G_i (which stays in the first-level
// cache) and its squared norm taken while it is there. XLA's CPU backend computes the two sums as
// two passes over the scores (theory/native.py). G_i is accumulated answer by answer in the order
// of the XLA formula, ((r_i1 s_i1 + r_i2 s_i2) + r_i3 s_i3) + ..., without fused multiply-adds,
// so with rewards in {0, 1} it equals that formula bit for bit; ||s_ij||^2 is summed over 16
// interleaved partial sums (another rounding order than XLA's reduction).
// Rewards of 0 still multiply their scores: a NaN or inf in any score makes the sums non-finite,
// which the caller's check reports.
//
// Prompts are processed in blocks of 16, claimed from an atomic counter by the calling thread and
// by tasks on XLA's intra-op thread pool; the caller waits only for blocks another thread has
// claimed, so it never waits on a task that has not started.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kPromptsPerBlock = 16;
// Below this many score entries per thread, one thread does all the work.
constexpr int64_t kEntriesPerThread = int64_t{1} << 18;
constexpr int kLanes = 16;

template <typename T>
void SumPrompts(const T* r, const T* s, T* g, T* q, int64_t n, int64_t d, int64_t begin, int64_t end) {
  for (int64_t p = begin; p < end; ++p) {
    const T* rp = r + p * n;
    const T* sp = s + p * n * d;
    T* gp = g + p * d;
    T qp = 0;
    for (int64_t j = 0; j < n; ++j) {
      const T rj = rp[j];
      const T* row = sp + j * d;
      if (j == 0) {
        for (int64_t k = 0; k < d; ++k) gp[k] = rj * row[k];
      } else {
        for (int64_t k = 0; k < d; ++k) gp[k] = gp[k] + rj * row[k];
      }
      T lanes[kLanes] = {};
      int64_t k = 0;
      for (; k + kLanes <= d; k += kLanes) {
        for (int l = 0; l < kLanes; ++l) lanes[l] += row[k + l] * row[k + l];
      }
      for (; k < d; ++k) lanes[0] += row[k] * row[k];
      T norm_sq = 0;
      for (int l = 0; l < kLanes; ++l) norm_sq += lanes[l];
      qp += rj * norm_sq;
    }
    q[p] = qp;
  }
}

struct Progress {
  std::atomic<int64_t> next_block{0};
  std::mutex mu;
  std::condition_variable finished;
  int64_t blocks_done = 0;
};

template <typename T>
ffi::Error Run(ffi::ThreadPool pool, ffi::AnyBuffer rewards, ffi::AnyBuffer scores, ffi::Result<ffi::AnyBuffer> g,
               ffi::Result<ffi::AnyBuffer> q) {
  const auto r_dims = rewards.dimensions();
  const auto s_dims = scores.dimensions();
  if (s_dims.size() < 2 || r_dims.size() + 1 != s_dims.size()) {
    return ffi::Error::InvalidArgument("answer_sums: rewards must be (..., n) and scores (..., n, D)");
  }
  for (size_t a = 0; a < r_dims.size(); ++a) {
    if (r_dims[a] != s_dims[a]) return ffi::Error::InvalidArgument("answer_sums: rewards and scores disagree");
  }
  if (rewards.element_type() != scores.element_type()) {
    return ffi::Error::InvalidArgument("answer_sums: rewards and scores must have one dtype");
  }
  const int64_t n = s_dims[s_dims.size() - 2];
  const int64_t d = s_dims[s_dims.size() - 1];
  const int64_t prompts = n > 0 ? static_cast<int64_t>(rewards.element_count()) / n : 0;
  if (n == 0 || d == 0 || prompts == 0) return ffi::Error::Success();
  const T* r = static_cast<const T*>(rewards.untyped_data());
  const T* s = static_cast<const T*>(scores.untyped_data());
  T* gp = static_cast<T*>(g->untyped_data());
  T* qp = static_cast<T*>(q->untyped_data());

  const int64_t blocks = (prompts + kPromptsPerBlock - 1) / kPromptsPerBlock;
  const int64_t by_size = std::max<int64_t>(1, prompts * n * d / kEntriesPerThread);
  const int64_t threads = std::min({std::max<int64_t>(pool.num_threads(), 1), blocks, by_size});
  auto progress = std::make_shared<Progress>();
  auto work = [=]() {
    int64_t done = 0;
    for (int64_t b; (b = progress->next_block.fetch_add(1)) < blocks; ++done) {
      SumPrompts<T>(r, s, gp, qp, n, d, b * kPromptsPerBlock, std::min(prompts, (b + 1) * kPromptsPerBlock));
    }
    std::lock_guard<std::mutex> lock(progress->mu);
    progress->blocks_done += done;
    progress->finished.notify_all();
  };
  for (int64_t t = 1; t < threads; ++t) pool.Schedule([work] { work(); });
  work();
  std::unique_lock<std::mutex> lock(progress->mu);
  progress->finished.wait(lock, [&] { return progress->blocks_done == blocks; });
  return ffi::Error::Success();
}

ffi::Error AnswerSums(ffi::ThreadPool pool, ffi::AnyBuffer rewards, ffi::AnyBuffer scores,
                      ffi::Result<ffi::AnyBuffer> g, ffi::Result<ffi::AnyBuffer> q) {
  switch (scores.element_type()) {
    case ffi::DataType::F32:
      return Run<float>(pool, rewards, scores, g, q);
    case ffi::DataType::F64:
      return Run<double>(pool, rewards, scores, g, q);
    default:
      return ffi::Error::InvalidArgument("answer_sums: scores must be float32 or float64");
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PasskAnswerSums, AnswerSums,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());
