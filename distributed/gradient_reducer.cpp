#include "distributed/gradient_reducer.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <mutex>
#include <string>

#include "distributed/communicator_state.h"

namespace alexnet::distributed {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

std::vector<torch::Tensor> parameters_in_backward_order(torch::nn::Module& module) {
  auto parameters = module.parameters();
  std::reverse(parameters.begin(), parameters.end());
  return parameters;
}

struct GradientReducer::Impl {
  struct Bucket {
    torch::Tensor flat;
    std::vector<size_t> members;  // parameter indices
    int64_t pending = 0;          // members whose gradient has not arrived this step
    WorkPtr work;
    int64_t number = 0;
  };

  Communicator::State* comm = nullptr;
  GradientReducerOptions options;
  std::vector<torch::Tensor> parameters;
  std::vector<size_t> bucket_of;
  std::vector<int64_t> offset_of;
  std::vector<bool> arrived;
  std::vector<Bucket> buckets;
  size_t next_launch = 0;
  std::vector<unsigned> hooks;
  std::mutex mutex;
  double wait_s = 0.0;
  std::exception_ptr hook_error;

  torch::Tensor slot(size_t i) {
    const auto& p = parameters[i];
    return buckets[bucket_of[i]].flat.narrow(0, offset_of[i], p.numel()).view(p.sizes());
  }

  // One open bucket per (device, dtype); a bucket is numbered when it opens, so buckets
  // start in the order their first gradient is expected.
  void assign_buckets() {
    struct Open {
      torch::Device device;
      c10::ScalarType dtype;
      size_t bucket;
      int64_t bytes;
    };
    std::vector<Open> open;
    std::vector<int64_t> numel;
    bucket_of.resize(parameters.size());
    offset_of.resize(parameters.size());
    for (size_t i = 0; i < parameters.size(); ++i) {
      const auto& p = parameters[i];
      const int64_t size = p.numel() * static_cast<int64_t>(p.element_size());
      auto it = std::find_if(open.begin(), open.end(), [&](const Open& o) {
        return o.device == p.device() && o.dtype == p.scalar_type();
      });
      if (it != open.end() && it->bytes > 0 && it->bytes + size > options.bucket_bytes) {
        open.erase(it);
        it = open.end();
      }
      if (it == open.end()) {
        buckets.emplace_back();
        numel.push_back(0);
        open.push_back({p.device(), p.scalar_type(), buckets.size() - 1, 0});
        it = open.end() - 1;
      }
      bucket_of[i] = it->bucket;
      offset_of[i] = numel[it->bucket];
      numel[it->bucket] += p.numel();
      it->bytes += size;
      buckets[it->bucket].members.push_back(i);
    }
    for (size_t b = 0; b < buckets.size(); ++b) {
      const auto& first = parameters[buckets[b].members.front()];
      buckets[b].flat = torch::zeros({numel[b]}, first.options().requires_grad(false));
    }
  }

  // Each parameter's gradient goes into its bucket as soon as backward produces it; an
  // exception inside a hook is kept for synchronize() to throw.
  void register_hooks() {
    Impl* impl = this;
    for (size_t i = 0; i < parameters.size(); ++i) {
      hooks.push_back(parameters[i].register_hook([impl, i](torch::Tensor gradient) {
        try {
          impl->arrive(i, gradient);
        } catch (...) {
          std::lock_guard<std::mutex> lock(impl->mutex);
          if (!impl->hook_error) impl->hook_error = std::current_exception();
        }
      }));
    }
  }

  void reset_step() {
    std::fill(arrived.begin(), arrived.end(), false);
    for (auto& b : buckets) {
      b.pending = static_cast<int64_t>(b.members.size());
      b.work.reset();
    }
    next_launch = 0;
  }

  // Called with the mutex held: starts the ready buckets, in bucket order on every rank.
  void launch_ready() {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0) {
      auto& bucket = buckets[next_launch];
      const std::string what = "gradient all-reduce of bucket " + std::to_string(next_launch);
      auto started = comm->start(what, [&] { return comm->collectives->all_reduce(bucket.flat); });
      bucket.work = started.first;
      bucket.number = started.second;
      ++next_launch;
    }
  }

  void arrive(size_t i, const torch::Tensor& gradient) {
    std::lock_guard<std::mutex> lock(mutex);
    if (arrived[i]) return;
    arrived[i] = true;
    slot(i).copy_(gradient);
    --buckets[bucket_of[i]].pending;
    launch_ready();
  }

  // Throws the first exception a hook caught; copies in the gradients that no hook saw
  // (zeros where a parameter got none) and starts the buckets still waiting.
  void collect_remaining() {
    std::lock_guard<std::mutex> lock(mutex);
    if (hook_error) {
      auto error = hook_error;
      hook_error = nullptr;
      std::rethrow_exception(error);
    }
    for (size_t i = 0; i < parameters.size(); ++i) {
      if (arrived[i]) continue;
      const auto& grad = parameters[i].grad();
      if (grad.defined()) {
        slot(i).copy_(grad);
      } else {
        slot(i).zero_();
      }
      arrived[i] = true;
      --buckets[bucket_of[i]].pending;
    }
    launch_ready();
  }
};

GradientReducer::GradientReducer(Communicator& communicator, std::vector<torch::Tensor> parameters,
                                 GradientReducerOptions options)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.comm = communicator.state_.get();
  m.options = options;
  TORCH_CHECK(options.bucket_bytes > 0, "bucket_bytes must be positive, got ",
              options.bucket_bytes);
  for (auto& p : parameters) {
    if (p.requires_grad()) m.parameters.push_back(p);
  }
  TORCH_CHECK(!m.parameters.empty(), "GradientReducer: no parameter requires a gradient");
  m.assign_buckets();
  m.arrived.assign(m.parameters.size(), false);
  m.reset_step();
  if (options.overlap) m.register_hooks();
}

GradientReducer::~GradientReducer() {
  auto& m = *impl_;
  for (size_t i = 0; i < m.hooks.size(); ++i) m.parameters[i].remove_hook(m.hooks[i]);
  // Collectives still in flight write into the buckets: let them finish (or fail).
  for (auto& bucket : m.buckets) {
    if (!bucket.work) continue;
    try {
      bucket.work->wait();
    } catch (const std::exception&) {
    }
  }
}

void GradientReducer::synchronize() {
  auto& m = *impl_;
  torch::NoGradGuard no_grad;
  m.collect_remaining();
  const auto start = Clock::now();
  const double world = static_cast<double>(m.comm->config.world_size);
  for (size_t b = 0; b < m.buckets.size(); ++b) {
    auto& bucket = m.buckets[b];
    m.comm->wait(bucket.work, "gradient all-reduce of bucket " + std::to_string(b), bucket.number);
    bucket.work.reset();
    bucket.flat.div_(world);
  }
  m.wait_s += seconds_since(start);
  for (size_t i = 0; i < m.parameters.size(); ++i) {
    auto& p = m.parameters[i];
    if (p.grad().defined()) {
      p.mutable_grad().copy_(m.slot(i));
    } else {
      p.mutable_grad() = m.slot(i).clone();
    }
  }
  m.reset_step();
}

int64_t GradientReducer::bucket_count() const {
  return static_cast<int64_t>(impl_->buckets.size());
}

std::vector<int64_t> GradientReducer::bucket_bytes() const {
  std::vector<int64_t> sizes;
  for (const auto& b : impl_->buckets) {
    sizes.push_back(b.flat.numel() * static_cast<int64_t>(b.flat.element_size()));
  }
  return sizes;
}

double GradientReducer::wait_seconds() const { return impl_->wait_s; }

}  // namespace alexnet::distributed
