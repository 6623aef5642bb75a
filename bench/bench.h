#pragma once

// The kinds of `alexnet bench KIND`. Each takes the arguments after KIND, prints its
// measurement (one JSON object with --json) and returns the exit status.

#include <string>
#include <vector>

namespace alexnet::bench {

/// Fused LRN forward (+ backward) against torch's local_response_norm and clone().
int run_lrn(const std::vector<std::string>& args);
/// Images/s of full training steps on random data, and peak resident memory.
int run_train_step(const std::vector<std::string>& args);
/// Inference time of the eager model against the exported TorchScript model.
int run_inference(const std::vector<std::string>& args);
/// Images/s of decoding, augmentation and batching through the loader.
int run_data(const std::vector<std::string>& args);
/// Data-parallel training steps: images/s and the share of the step spent in all-reduce.
int run_distributed(const std::vector<std::string>& args);

}  // namespace alexnet::bench
