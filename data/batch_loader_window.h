// BatchLoader's private window of held rows, shared by its two source files: the reader
// thread (data/batch_loader_reader.cpp) takes hold of a window's rows, the assembly
// (data/batch_loader.cpp) builds its batches and hands them out. Not for use elsewhere.
#pragma once

#include <ATen/ATen.h>

#include <exception>
#include <optional>
#include <utility>
#include <vector>

#include "data/batch_loader.h"
#include "data/source.h"

namespace forge::data {

// Two threads per epoch:
//   reader     for each window of the order: sorts its samples, then takes hold of their
//              stored rows as contiguous runs (mapped, or one HDF5 read per run of whole
//              chunks into the window's raw buffer), each sample once;
//   assembler  builds the batches of the held windows in order, each gathering its rows in
//              shuffled order and converting them into a fresh, cache-sized batch, at most
//              aheadLimit_ ahead of the caller. A window's rows are let go as soon as its
//              last batch is built.
// The reader, when it may not take another window yet, assembles too: on two cores both
// threads then convert, which is the bulk of the work once rows come mapped. Converting
// straight into the batch the caller takes next, instead of into a window-sized buffer it
// reads later, saves a trip of every converted byte through memory (measured: 0.84-0.94x
// of a raw read against 0.69-0.89x, alternating; bench/RESULTS.md).
struct BatchLoader::Window {
  int64_t first = 0;  // position of the window in the order
  int64_t count = 0;
  std::vector<const char*> row;  // the stored row of each position
  std::vector<MappedRows> maps;  // the runs mapped from the file
  at::Tensor raw;                // the runs read (when some could not be mapped)
  std::vector<std::pair<int64_t, int64_t>> batches;  // positions [b0, b1) of each batch
  std::vector<std::optional<Batch>> built;            // filled as they are assembled
  // A batch that could not be built (a non-finite feature): its error reaches the caller in
  // the batch's turn, as from a loader that built them one after another.
  std::vector<std::exception_ptr> failed;
  bool ready(size_t k) const { return built[k].has_value() || failed[k] != nullptr; }
  size_t claimed = 0, assembled = 0, delivered = 0;
};

}  // namespace forge::data
