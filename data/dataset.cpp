#include "data/dataset.h"

#include "data/hdf5_file.h"

namespace forge::data {

std::vector<int64_t> SplitData::sampleShape() const {
  auto s = features.sizes().vec();
  if (!s.empty()) s.erase(s.begin());
  return s;
}

SplitData loadSplit(const SplitSpec& spec) {
  H5Id file = openFileReadOnly(spec.path);
  const std::string featName = spec.split + "/" + spec.features;
  const std::string labelName = spec.split + "/" + spec.labels;
  if (!objectExists(file.get(), spec.split)) {
    throw DataError(concat("data file '", spec.path, "' has no split group '", spec.split, "'"));
  }
  H5Id feat = openDataset(file.get(), spec.path, featName);
  H5Id lab = openDataset(file.get(), spec.path, labelName);
  H5DatasetInfo fi = datasetInfo(feat.get());
  H5DatasetInfo li = datasetInfo(lab.get());
  auto where = [&](const std::string& ds) { return concat("data file '", spec.path, "', dataset '", ds, "': "); };

  at::ScalarType featType;
  hid_t featMem;
  if (fi.typeClass == H5T_INTEGER && fi.typeSize == 1 && !fi.isSigned) {
    featType = at::kByte;
    featMem = H5T_NATIVE_UINT8;
  } else if (fi.typeClass == H5T_FLOAT && fi.typeSize == 4) {
    featType = at::kFloat;
    featMem = H5T_NATIVE_FLOAT;
  } else if (fi.typeClass == H5T_FLOAT && fi.typeSize == 8) {
    featType = at::kDouble;
    featMem = H5T_NATIVE_DOUBLE;
  } else {
    throw DataError(where(featName) + concat("unsupported feature type ", fi.typeName(),
                                          " (use uint8, float32 or float64)"));
  }
  if (li.typeClass != H5T_INTEGER) {
    throw DataError(where(labelName) + concat("labels must be integers, found ", li.typeName()));
  }
  if (fi.dims.size() < 2) {
    throw DataError(where(featName) + "features need a sample dimension and at least one feature dimension");
  }
  if (li.dims.size() != 1) {
    throw DataError(where(labelName) + concat("labels must be one-dimensional, found rank ", li.dims.size()));
  }
  if (fi.dims[0] != li.dims[0]) {
    throw DataError(concat("data file '", spec.path, "': '", featName, "' has ", fi.dims[0], " samples but '", labelName,
                        "' has ", li.dims[0]));
  }
  if (fi.dims[0] == 0) throw DataError(concat("data file '", spec.path, "': split '", spec.split, "' is empty"));

  std::vector<int64_t> shape(fi.dims.begin(), fi.dims.end());
  SplitData out;
  out.name = spec.path + ":" + spec.split;
  out.features = at::empty(shape, featType);
  out.labels = at::empty({static_cast<int64_t>(li.dims[0])}, at::kLong);
  readRows(feat.get(), featMem, 0, fi.dims[0], out.features.data_ptr());
  readRows(lab.get(), H5T_NATIVE_INT64, 0, li.dims[0], out.labels.data_ptr());

  if (spec.numClasses > 0) {
    const int64_t* l = out.labels.data_ptr<int64_t>();
    for (int64_t i = 0; i < out.size(); ++i) {
      if (l[i] < 0 || l[i] >= spec.numClasses) {
        throw DataError(where(labelName) + concat("label ", l[i], " at index ", i, " is outside [0, ", spec.numClasses,
                                               ") (model.num_classes is ", spec.numClasses, ")"));
      }
    }
  }
  return out;
}

}  // namespace forge::data
