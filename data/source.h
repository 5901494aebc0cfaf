// One split (train / test) of a data set stored in one or many HDF5 files, opened for
// streaming. Layout of every file:
//   <split>/<features>  N x D...  values: uint8 (images, normalized), float32 or float64;
//                                 or token ids: any integer type up to 64 bits (kept as
//                                 integers, never normalized; uint8 too, for byte-level text)
//   <split>/<labels>    what the targets are (SourceSpec::targets):
//                       classes      N, any integer type, values in [0, num_classes)
//                       values       N or N x D..., float32 or float64 (regression)
//                       next tokens  no dataset: a sample of L token ids is the input of its
//                                    first L - 1 and the target of its last L - 1
// Several files (a list, or glob patterns) behave as one split: their samples are numbered
// in file order. Every process opens its own files.
//
// Opening validates everything that can be checked without reading the features: a missing
// file, group or dataset, an unsupported dtype, feature and label counts that differ, sample
// shapes that differ between files, an empty split, a label out of [0, num_classes), a
// non-finite target value, a label layout that does not fit the targets asked for, and
// values HDF5 could not deliver as declared (data/dataset_checks.h: a filter it lacks, a
// virtual dataset's missing source, chunks never written, an extent the file cannot hold).
// Each is a DataError naming the file and the dataset. Labels are held in memory; features
// are only ever read in blocks, on demand. A file that changes while it is open (cut short,
// rewritten, replaced) is found by read() and map(), or at the latest by changeOf(), and is
// a DataError naming it.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace forge::data {

// What a batch's targets are (the task decides: trainer/tasks/).
enum class Targets {
  kClasses,     // integer labels, one per sample (classification)
  kValues,      // float targets of any trailing shape (regression)
  kNextTokens,  // none stored: the features are token sequences, each its own target shifted by one
};
const char* targetsName(Targets t);  // "class labels", "float targets", "next tokens"

struct SourceSpec {
  std::vector<std::string> paths;  // files or glob patterns ("shards/part-*.h5"), in order
  std::string split = "train";
  std::string features = "features";
  std::string labels = "labels";
  int64_t numClasses = 0;  // > 0: labels are checked against [0, numClasses)
  Targets targets = Targets::kClasses;
  std::string task = "classification";  // for messages: the task that asks for these targets
};

// Stored rows mapped read-only from their file (SplitSource::map); unmapped when dropped.
class MappedRows {
 public:
  MappedRows() = default;
  MappedRows(void* base, size_t length, const void* rows) : base_(base), length_(length), rows_(rows) {}
  ~MappedRows();
  MappedRows(MappedRows&& o) noexcept { *this = std::move(o); }
  MappedRows& operator=(MappedRows&& o) noexcept;
  MappedRows(const MappedRows&) = delete;
  MappedRows& operator=(const MappedRows&) = delete;

  const void* rows() const { return rows_; }  // null: nothing mapped
  explicit operator bool() const { return rows_ != nullptr; }

 private:
  void* base_ = nullptr;
  size_t length_ = 0;
  const void* rows_ = nullptr;
};

// A run of consecutive rows of one file: the unit of reading. Blocks are aligned to the
// dataset's chunks and hold about 1 MiB, so a block read touches whole chunks only.
struct Block {
  int file = 0;
  int64_t firstRow = 0;     // within the file
  int64_t rows = 0;
  int64_t firstGlobal = 0;  // sample index within the split
};

class SplitSource {
 public:
  explicit SplitSource(const SourceSpec& spec);
  ~SplitSource();
  SplitSource(SplitSource&&) noexcept;
  SplitSource& operator=(SplitSource&&) noexcept;

  int64_t size() const { return size_; }
  const std::vector<int64_t>& sampleShape() const { return sampleShape_; }
  int64_t rowElements() const { return rowElements_; }
  size_t rowBytes() const { return rowElements_ * at::elementSize(type_); }
  // A sample's size in a batch: float32 values, or int64 token ids.
  size_t batchRowBytes() const { return rowElements_ * (tokens_ ? 8 : 4); }
  // As read: kByte, kFloat or kDouble (values); kByte, kInt or kLong (token ids).
  at::ScalarType featureType() const { return type_; }
  // Whether the features are token ids (integers other than uint8, or any integers with
  // next-token targets): batches carry them as int64, unnormalized.
  bool tokens() const { return tokens_; }
  const std::string& storedTypeName() const { return storedTypeName_; }  // "int16", "float32", ... (the first file's)
  Targets targets() const { return targets_; }
  // kClasses: int64 N; kValues: float32 N x D...; kNextTokens: undefined.
  const at::Tensor& labels() const { return labels_; }
  // The shape of one sample's target: {} (a class or a scalar value), D..., or {L - 1}.
  std::vector<int64_t> targetShape() const;
  // The shape of one sample as the model gets it: sampleShape(), or {L - 1} with next tokens.
  std::vector<int64_t> inputShape() const;
  const std::vector<Block>& blocks() const { return blocks_; }
  const std::string& name() const { return name_; }     // "<file>:<split>" or "<n> files:<split>"
  const std::string& split() const { return split_; }
  int files() const;
  const std::string& path(int file) const;
  // What changed in file `file` since it was opened ("" when nothing): its size, its
  // modification time, or which file its path names (replaced). One fstat and one stat:
  // for the epoch boundary (the engine agrees on it over ranks), not for every batch.
  // read() and map() check size and modification time themselves and throw DataError.
  std::string changeOf(int file) const;

  // Reads the features of samples [first, first + count) (which must lie in one file) into
  // `out`, in the stored type. Thread-safe (HDF5 calls are serialized). DataError naming the
  // file when it cannot, or when the file changed since it was opened (HDF5 would have read
  // zeros past a new end).
  void read(int64_t first, int64_t count, void* out) const;
  // The stored rows of samples [first, first + count) (in one file), mapped from the file
  // with their pages populated in one call, when they lie in it exactly as read() would
  // deliver them: unfiltered chunks of whole rows in the native type, back to back in the
  // file (what forge's converters write), or a contiguous dataset. Empty otherwise, and
  // with FORGE_NO_MAPPED_READS set; read() then copies them. Reading the page cache in
  // place saves the copy read() makes. DataError when the file changed since it was opened.
  // Pages of a file cut short after this call raise SIGBUS when read: read them through
  // readMappedPages (data/mapped_pages.h). Thread-safe.
  MappedRows map(int64_t first, int64_t count) const;
  // Asks the kernel to start reading those rows into the page cache now, without waiting,
  // when they could be mapped (a no-op otherwise): for rows needed soon whose file may not
  // be cached. Thread-safe.
  void willNeed(int64_t first, int64_t count) const;
  // Index of the file that holds `sample`, and the last sample + 1 of that file.
  int fileOf(int64_t sample) const;
  int64_t fileEnd(int fileIndex) const;
  // "file 'a.h5', dataset 'train/features', row 17" for messages.
  std::string locate(int64_t sample) const;
  // A float64 attribute of the split's group (forge's converters keep reference values
  // there: unigram_entropy_nats, noise_floor_mse); nullopt when absent or when the split
  // spans several files.
  std::optional<double> attribute(const std::string& name) const;

 private:
  struct File;
  // The constructor's steps, one file at a time, with hdf5Mutex() held. addFile opens and
  // checks one file, appends its samples to the split and returns its labels.
  at::Tensor addFile(const std::string& path, const SourceSpec& spec);
  // Takes the split's sample shape and type from the first file; DataError when a later one
  // differs.
  void matchFirstFile(const std::string& path, const std::vector<int64_t>& shape, at::ScalarType type);
  void addBlocks(const File& f);
  // read() of rows [row, row + count) of file `f`, without the change check.
  void readRowsOf(const File& f, int64_t row, int64_t count, char* dst) const;
  // Where the stored rows [first, first + count) start in their file, when they lie there
  // as read() delivers them (see map()); HADDR_UNDEF otherwise.
  uint64_t rowsStart(int64_t first, int64_t count) const;
  std::vector<std::unique_ptr<File>> files_;
  std::vector<Block> blocks_;
  std::vector<int64_t> sampleShape_;
  int64_t rowElements_ = 0;
  int64_t size_ = 0;
  at::ScalarType type_ = at::kByte;
  bool tokens_ = false;
  std::string storedTypeName_;
  Targets targets_ = Targets::kClasses;
  at::Tensor labels_;
  std::string name_;
  std::string split_;
  std::string featuresName_;
};

// Expands each entry (a path or a glob pattern) in order; a pattern's matches are sorted.
// DataError when a pattern matches nothing.
std::vector<std::string> expandPaths(const std::vector<std::string>& patterns);

// Per-feature sums over samples [first, first + count) of a split, for normalization
// statistics: each rank sums its share, the sums are all-reduced, rank 0 stores the result.
struct FeatureSums {
  at::Tensor sum;    // float64, rowElements
  at::Tensor sumSq;  // float64, rowElements
  int64_t count = 0;
};
FeatureSums featureSums(const SplitSource& source, int64_t first, int64_t count, double scale);

// The smallest and largest token id among samples [first, first + count) of a split of
// token ids, for the check against the model's vocabulary before training (each rank scans
// its share; the results are reduced).
struct TokenRange {
  int64_t min = INT64_MAX;
  int64_t max = INT64_MIN;
  int64_t sampleOfMax = -1;  // where the largest first occurs (for the message)
  int64_t sampleOfMin = -1;
};
TokenRange tokenRange(const SplitSource& source, int64_t first, int64_t count);

// Normalization statistics kept beside a run: datasets "mean" and "std" (float64, one value
// per feature). Written to a temporary file and renamed into place.
void writeFeatureStats(const std::string& path, const std::vector<double>& mean, const std::vector<double>& std);
void readFeatureStats(const std::string& path, std::vector<double>& mean, std::vector<double>& std);

}  // namespace forge::data
