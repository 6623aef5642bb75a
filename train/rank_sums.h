#pragma once

#include "distributed/communicator.h"
#include "train/metrics.h"

namespace alexnet::train {

/// Error counts summed over the ranks of a data-parallel job; `local` itself when `comm` is
/// null (one process). Every rank must call it.
ErrorCounts sum_over_ranks(distributed::Communicator* comm, const ErrorCounts& local);

/// A validation result over every rank's shard: samples and confusion matrices summed, loss
/// and errors weighted by each rank's samples; `result` itself when `comm` is null. A rank
/// whose shard was empty has no confusion matrix; the others' give the number of classes.
/// Every rank must call it.
EvalResult sum_over_ranks(distributed::Communicator* comm, EvalResult result);

/// Whether any rank says yes; `local` when `comm` is null. Every rank must call it.
bool any_rank(distributed::Communicator* comm, bool local);

}  // namespace alexnet::train
