#include "train/rank_sums.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace alexnet::train {

ErrorCounts sum_over_ranks(distributed::Communicator* comm, const ErrorCounts& local) {
  if (comm == nullptr) return local;
  const auto sums =
      comm->sum({static_cast<double>(local.samples), static_cast<double>(local.top1_wrong),
                 static_cast<double>(local.top5_wrong), local.loss_sum});
  ErrorCounts total;
  total.samples = static_cast<int64_t>(std::llround(sums[0]));
  total.top1_wrong = static_cast<int64_t>(std::llround(sums[1]));
  total.top5_wrong = static_cast<int64_t>(std::llround(sums[2]));
  total.loss_sum = sums[3];
  return total;
}

EvalResult sum_over_ranks(distributed::Communicator* comm, EvalResult result) {
  if (comm == nullptr) return result;
  const auto n_local = static_cast<double>(result.samples);
  const bool has_confusion = result.confusion.defined();
  const auto sums = comm->sum({n_local, result.loss * n_local, result.top1_error * n_local,
                               result.top5_error * n_local,
                               has_confusion ? static_cast<double>(result.confusion.size(0)) : 0.0,
                               has_confusion ? 1.0 : 0.0});
  result.samples = static_cast<int64_t>(std::llround(sums[0]));
  const double total = std::max(sums[0], 1.0);
  result.loss = sums[1] / total;
  result.top1_error = sums[2] / total;
  result.top5_error = sums[3] / total;
  if (sums[5] > 0) {
    const auto classes = static_cast<int64_t>(std::llround(sums[4] / sums[5]));
    const auto local = has_confusion ? result.confusion.to(torch::kFloat64).contiguous()
                                     : torch::zeros({classes, classes}, torch::kFloat64);
    TORCH_CHECK(local.size(0) == classes, "validation: this rank's confusion matrix has ",
                local.size(0), " classes, the job's ", classes);
    const auto summed = comm->sum(
        std::vector<double>(local.data_ptr<double>(), local.data_ptr<double>() + local.numel()));
    result.confusion =
        torch::tensor(summed, torch::kFloat64).round().to(torch::kInt64).view({classes, classes});
  }
  return result;
}

bool any_rank(distributed::Communicator* comm, bool local) {
  return comm ? comm->sum({local ? 1.0 : 0.0})[0] > 0 : local;
}

}  // namespace alexnet::train
