#include "data/source_layout.h"

#include <unistd.h>

#include <new>

#include "core/error.h"
#include "core/strings.h"
#include "data/hdf5_file.h"

namespace forge::data {

std::string datasetWhere(const std::string& path, const std::string& ds) {
  return concat("data file '", path, "', dataset '", ds, "': ");
}

namespace {

// Refuses `bytes` of labels that could not fit in this machine's memory: a header may
// declare more samples than any file holds (a fill value stands in for rows never
// written), and an allocation that large fails (or, with overcommit, succeeds and swaps).
at::Tensor allocateLabels(std::vector<int64_t> shape, at::ScalarType type, const std::string& context) {
  double bytes = static_cast<double>(at::elementSize(type));
  for (int64_t d : shape) bytes *= static_cast<double>(d);
  const double memory = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGESIZE));
  try {
    if (bytes > memory) throw std::bad_alloc();
    return at::empty(shape, type);
  } catch (const std::exception&) {  // c10::Error or std::bad_alloc
    throw DataError(context + concat("its ", withThousands(shape[0]), " labels (", bytes / (1 << 30), " GiB as ",
                                     at::toString(type),
                                     ") do not fit in memory: the file declares more samples than this machine "
                                     "can hold the labels of"));
  }
}

}  // namespace

// The type features are read as, from their stored type. Integers other than uint8 are
// token ids, and so is uint8 when the targets are the next tokens; they are read as int32
// when every value fits (HDF5 converts 8- and 16-bit ones), else as int64.
at::ScalarType featureTypeOf(const std::string& path, const std::string& featuresName, const H5DatasetInfo& fi,
                             const SourceSpec& spec, bool& tokens) {
  tokens = false;
  if (fi.typeClass == H5T_INTEGER && fi.typeSize == 1 && !fi.isSigned) {
    tokens = spec.targets == Targets::kNextTokens;
    return at::kByte;
  }
  if (fi.typeClass == H5T_FLOAT && (fi.typeSize == 4 || fi.typeSize == 8)) {
    if (spec.targets == Targets::kNextTokens) {
      throw DataError(datasetWhere(path, featuresName) +
                      concat("task ", spec.task, " reads token ids, but the features are ", fi.typeName(),
                             ": store integer ids (forge data text writes byte sequences)"));
    }
    return fi.typeSize == 4 ? at::kFloat : at::kDouble;
  }
  if (fi.typeClass == H5T_INTEGER && fi.typeSize <= 8 && !(fi.typeSize == 8 && !fi.isSigned)) {
    tokens = true;
    return fi.typeSize < 4 || (fi.typeSize == 4 && fi.isSigned) ? at::kInt : at::kLong;
  }
  throw DataError(datasetWhere(path, featuresName) +
                  concat("unsupported feature type ", fi.typeName(),
                         " (values: uint8, float32 or float64; token ids: integers up to int64)"));
}

void checkFeatureShape(const std::string& path, const std::string& split, const std::string& featuresName,
                       const H5DatasetInfo& fi, const SourceSpec& spec) {
  if (fi.dims.size() < 2) {
    throw DataError(datasetWhere(path, featuresName) +
                    "features need a sample dimension and at least one feature dimension");
  }
  if (fi.dims[0] == 0) throw DataError(concat("data file '", path, "': split '", split, "' is empty"));
  if (spec.targets == Targets::kNextTokens && (fi.dims.size() != 2 || fi.dims[1] < 2)) {
    throw DataError(datasetWhere(path, featuresName) +
                    concat("task ", spec.task, " needs sequences of at least 2 token ids (N x L), found ",
                           dimsText(std::vector<int64_t>(fi.dims.begin() + 1, fi.dims.end())), " per sample"));
  }
}

// Checks a file's labels (`li`) against its features and the targets asked for.
void checkLabels(const std::string& path, const std::string& featuresName, const H5DatasetInfo& fi,
                 const std::string& labelName, const H5DatasetInfo& li, const SourceSpec& spec) {
  if (spec.targets == Targets::kClasses) {
    if (li.typeClass == H5T_FLOAT) {
      throw DataError(datasetWhere(path, labelName) +
                      concat("task ", spec.task, " takes integer class labels, but these are ", li.typeName(),
                             " (float targets are a regression's: task.name: regression)"));
    }
    if (li.typeClass != H5T_INTEGER) {
      throw DataError(datasetWhere(path, labelName) + concat("labels must be integers, found ", li.typeName()));
    }
    if (li.dims.size() != 1) {
      throw DataError(datasetWhere(path, labelName) +
                      concat("task ", spec.task, " takes one class label per sample (N), found shape ",
                             dimsText(std::vector<int64_t>(li.dims.begin(), li.dims.end())),
                             li.dims.size() > 1 ? " (several values per sample are a regression's: task.name: regression)"
                                                : ""));
    }
  } else {
    if (li.typeClass != H5T_FLOAT) {
      throw DataError(datasetWhere(path, labelName) +
                      concat("task ", spec.task, " takes float targets (float32 or float64), but these are ",
                             li.typeName(),
                             li.typeClass == H5T_INTEGER ? " (integer labels are classes: task.name: classification)"
                                                         : ""));
    }
    if (li.dims.empty()) throw DataError(datasetWhere(path, labelName) + "targets need a sample dimension");
  }
  if (fi.dims[0] != li.dims[0]) {
    throw DataError(concat("data file '", path, "': '", featuresName, "' has ", fi.dims[0], " samples but '",
                           labelName, "' has ", li.dims[0]));
  }
}

// The `rows` labels of dataset `labels`: int64 class labels checked against [0, numClasses)
// when numClasses > 0, or float32 targets checked to be finite; `context` starts an error
// message.
at::Tensor readLabels(hid_t labels, const H5DatasetInfo& li, const SourceSpec& spec, const std::string& context) {
  const bool classes = spec.targets == Targets::kClasses;
  std::vector<int64_t> shape(li.dims.begin(), li.dims.end());
  at::Tensor out = allocateLabels(shape, classes ? at::kLong : at::kFloat, context);
  try {
    readRows(labels, classes ? H5T_NATIVE_INT64 : H5T_NATIVE_FLOAT, 0, li.dims[0], out.data_ptr());
  } catch (const DataError& e) {
    throw DataError(context + e.what());
  }
  if (classes && spec.numClasses > 0) {
    const int64_t* l = out.data_ptr<int64_t>();
    for (int64_t i = 0; i < shape[0]; ++i) {
      if (l[i] < 0 || l[i] >= spec.numClasses) {
        throw DataError(context + concat("label ", l[i], " at index ", i, " is outside [0, ", spec.numClasses,
                                         ") (model.num_classes is ", spec.numClasses, ")"));
      }
    }
  }
  if (!classes) {
    at::Tensor bad = out.isfinite().logical_not().reshape({shape[0], -1}).any(1).nonzero();
    if (bad.numel() > 0) {
      throw DataError(context + concat("target of sample ", bad[0][0].item<int64_t>(),
                                       " is not finite as float32 (NaN, Inf, or beyond float32's range of 3.4e38): "
                                       "fix the data"));
    }
  }
  return out;
}

}  // namespace forge::data
