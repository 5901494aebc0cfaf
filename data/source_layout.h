// The layout rules of a split's datasets (data/source.h): which stored feature types are
// values and which token ids, what labels each kind of targets takes, and reading them.
// Each problem is a DataError naming the file and the dataset.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "data/hdf5_file.h"
#include "data/source.h"

namespace forge::data {

// "data file '<path>', dataset '<ds>': ", the start of a message about that dataset.
std::string datasetWhere(const std::string& path, const std::string& ds);

// The type features are read as, from their stored type; `tokens` says whether they are
// token ids (integers other than uint8, or any integers with next-token targets).
at::ScalarType featureTypeOf(const std::string& path, const std::string& featuresName, const H5DatasetInfo& fi,
                             const SourceSpec& spec, bool& tokens);
// A sample dimension and at least one value a sample (two token ids with next-token targets).
void checkFeatureShape(const std::string& path, const std::string& split, const std::string& featuresName,
                       const H5DatasetInfo& fi, const SourceSpec& spec);
// A file's labels (`li`) against its features and the targets asked for.
void checkLabels(const std::string& path, const std::string& featuresName, const H5DatasetInfo& fi,
                 const std::string& labelName, const H5DatasetInfo& li, const SourceSpec& spec);
// The labels of dataset `labels`: int64 classes, checked against [0, numClasses) when that
// is set, or finite float32 targets; `context` starts an error message.
at::Tensor readLabels(hid_t labels, const H5DatasetInfo& li, const SourceSpec& spec, const std::string& context);

}  // namespace forge::data
