#include "distributed/communicator.h"

namespace forge::dist {

void Communicator::allReduce(const at::Tensor& tensor, ReduceOp op) {
  allReduceAsync(tensor, op)->wait(deadlineAfter(timeout_));
}

void Communicator::broadcast(const at::Tensor& tensor, int root) {
  broadcastAsync(tensor, root)->wait(deadlineAfter(timeout_));
}

void Communicator::allGather(const at::Tensor& input, const at::Tensor& output) {
  allGatherAsync(input, output)->wait(deadlineAfter(timeout_));
}

void Communicator::barrier() { barrierAsync()->wait(deadlineAfter(timeout_)); }

double Communicator::allReduceScalar(double value, ReduceOp op) {
  at::Tensor t = at::full({1}, value, at::kDouble);
  allReduce(t, op);
  return t.item<double>();
}

bool Communicator::anyRank(bool flag) {
  return allReduceScalar(flag ? 1.0 : 0.0, ReduceOp::kMax) > 0.5;
}

}  // namespace forge::dist
