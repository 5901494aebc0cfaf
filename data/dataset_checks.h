// Checks, when a data file is opened, that a dataset's values can be read as declared. HDF5
// itself reads what is not there as fill values (zeros, unless the dataset chose its own),
// which would train a model on zeros without a word; and it finds a missing filter or a
// header that promises more than the file holds only when the rows are read, mid-run. Each
// failure here is a DataError naming the file and the dataset, before training starts:
// - a filter its chunks need that this HDF5 library cannot decode (h5py's lzf, for one);
// - values that live in another file: a virtual dataset, an external link, external raw
//   storage (forge could not watch them for changes, and they may be missing or partial);
// - chunks (or a contiguous dataset's storage) never written, without a fill value of the
//   dataset's own (H5Pfill_value_defined is not H5D_FILL_VALUE_USER_DEFINED);
// - a declared extent the file cannot hold (a corrupt or hostile header: 10^12 rows in a
//   file of a few kilobytes).
// The checks read only the dataset's header and its chunk index, never its values.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>

#include "data/hdf5_file.h"

namespace forge::data {

// `dataset` (`name`, of shape and type `info`) of the open `file` at `path`, whose size is
// `fileBytes`. Call with hdf5Mutex() held.
void checkStoredValues(hid_t file, hid_t dataset, const H5DatasetInfo& info, const std::string& path,
                       const std::string& name, uint64_t fileBytes);

}  // namespace forge::data
