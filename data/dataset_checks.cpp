#include "data/dataset_checks.h"

#include <limits>
#include <vector>

#include "core/error.h"
#include "core/strings.h"

namespace forge::data {
namespace {

constexpr uint64_t kSaturated = std::numeric_limits<uint64_t>::max();

uint64_t times(uint64_t a, uint64_t b) {
  uint64_t out;
  return __builtin_mul_overflow(a, b, &out) ? kSaturated : out;
}

std::string where(const std::string& path, const std::string& name) {
  return concat("data file '", path, "', dataset '", name, "': ");
}

// "1,000,000,000,000", or "more than 2^64" for a count that overflowed.
std::string countText(uint64_t n) {
  return n == kSaturated ? std::string("more than 2^64") : withThousands(static_cast<long long>(n));
}

void checkFilters(hid_t dcpl, const std::string& path, const std::string& name) {
  const int n = H5Pget_nfilters(dcpl);
  if (n < 0) throw DataError(where(path, name) + "cannot read its filter pipeline (a corrupt header)");
  for (int i = 0; i < n; ++i) {
    unsigned flags = 0, config = 0;
    size_t values = 0;
    char filterName[256] = {};
    const H5Z_filter_t id =
        H5Pget_filter2(dcpl, static_cast<unsigned>(i), &flags, &values, nullptr, sizeof filterName, filterName, &config);
    if (id < 0) throw DataError(where(path, name) + "cannot read its filter pipeline (a corrupt header)");
    unsigned info = 0;
    const bool decodes =
        H5Zfilter_avail(id) > 0 && H5Zget_filter_info(id, &info) >= 0 && (info & H5Z_FILTER_CONFIG_DECODE_ENABLED);
    if (decodes) continue;
    const std::string filter = filterName[0] != '\0' ? concat("'", filterName, "' (filter id ", id, ")")
                                                      : concat("id ", id);
    throw DataError(where(path, name) +
                    concat("its chunks are stored through HDF5 filter ", filter,
                           ", which this HDF5 library cannot decode: rewrite the file without it (e.g. h5py's "
                           "compression='gzip', or `h5repack -f NONE`), or make the filter's plugin available "
                           "(HDF5_PLUGIN_PATH)"));
  }
}

// Chunks or contiguous storage never written, without a fill value of the dataset's own;
// and an extent the file cannot hold.
void checkStorage(hid_t dataset, hid_t dcpl, H5D_layout_t layout, const H5DatasetInfo& info,
                  const std::string& path, const std::string& name, uint64_t fileBytes) {
  uint64_t elements = 1;
  for (hsize_t d : info.dims) elements = times(elements, d);
  if (elements == 0) return;
  const uint64_t bytes = times(elements, info.typeSize);
  H5D_fill_value_t fill = H5D_FILL_VALUE_UNDEFINED;
  const bool ownFill = H5Pfill_value_defined(dcpl, &fill) >= 0 && fill == H5D_FILL_VALUE_USER_DEFINED;
  const bool filtered = H5Pget_nfilters(dcpl) > 0;
  const uint64_t rows = info.dims.empty() ? 1 : info.dims[0];
  auto tooLarge = [&](const std::string& needs) {
    return DataError(where(path, name) +
                     concat("it declares ", countText(rows), " rows (", dimsText(std::vector<int64_t>(
                                                                        info.dims.begin(), info.dims.end())),
                            "), which need ", needs, ", but the file holds ", withThousands(fileBytes),
                            " bytes: its header is corrupt, or the file was cut short"));
  };
  if (layout == H5D_CHUNKED) {
    std::vector<hsize_t> chunk(info.dims.size());
    if (H5Pget_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()) != static_cast<int>(chunk.size())) {
      throw DataError(where(path, name) + "cannot read its chunk shape (a corrupt header)");
    }
    uint64_t expected = 1;
    for (size_t d = 0; d < chunk.size(); ++d) {
      if (chunk[d] == 0) throw DataError(where(path, name) + "its chunk shape has a zero dimension (a corrupt header)");
      expected = times(expected, (info.dims[d] + chunk[d] - 1) / chunk[d]);
    }
    if (!ownFill) {
      // Every chunk must be stored, each in at least a byte of the file (all of its bytes
      // when unfiltered).
      if (expected > fileBytes) throw tooLarge(concat(countText(expected), " chunks"));
      if (!filtered && bytes > fileBytes) throw tooLarge(concat(countText(bytes), " bytes"));
    }
    const int64_t stored = storedChunks(dataset);
    if (stored < 0) throw DataError(where(path, name) + "cannot read its chunk index (a corrupt file)");
    if (static_cast<uint64_t>(stored) < expected && !ownFill) {
      throw DataError(where(path, name) +
                      concat(countText(expected - static_cast<uint64_t>(stored)), " of its ", countText(expected),
                             " chunks were never written, and it has no fill value of its own: HDF5 would read "
                             "their rows as zeros. Write every row (or give the dataset a fill value when you "
                             "create it, if the missing rows are meant to hold it)"));
    }
  } else if (layout == H5D_CONTIGUOUS) {
    H5D_space_status_t status = H5D_SPACE_STATUS_ERROR;
    if (H5Dget_space_status(dataset, &status) < 0) {
      throw DataError(where(path, name) + "cannot read whether its storage exists (a corrupt header)");
    }
    if (status != H5D_SPACE_STATUS_ALLOCATED && !ownFill) {
      throw DataError(where(path, name) +
                      "its values were never written, and it has no fill value of its own: HDF5 would read them "
                      "as zeros");
    }
    if (status == H5D_SPACE_STATUS_ALLOCATED && bytes > fileBytes) throw tooLarge(concat(countText(bytes), " bytes"));
  }
}

}  // namespace

void checkStoredValues(hid_t file, hid_t dataset, const H5DatasetInfo& info, const std::string& path,
                       const std::string& name, uint64_t fileBytes) {
  H5Id dcpl(H5Dget_create_plist(dataset));
  if (!dcpl.valid()) throw DataError(where(path, name) + "cannot read how it is stored (a corrupt header)");
  const H5D_layout_t layout = H5Pget_layout(dcpl.get());
  if (layout < 0) throw DataError(where(path, name) + "cannot read its storage layout (a corrupt header)");
  // forge reads, maps and watches (data/file_state.h) the file it opened: values that live
  // in other files would escape all three. A virtual dataset's sources, an external link's
  // target or external raw storage could change under a run, or be missing, chained or
  // partly mapped, and read as zeros without a word (a hostile trial found each of these);
  // such data is refused, with the way to make it self-contained.
  const std::string selfContained =
      " forge reads only values stored in the data file itself, whose changes it can watch: write the data into "
      "the file (h5py: dst[name] = src[name][:], or h5repack), then train on that file";
  if (layout == H5D_VIRTUAL) {
    throw DataError(where(path, name) + "it is a virtual dataset (its values live in its source files)." +
                    selfContained);
  }
  if (H5Pget_external_count(dcpl.get()) > 0) {
    throw DataError(where(path, name) + "its values are stored in external raw files." + selfContained);
  }
  // The file the dataset lives in, by the name HDF5 opened it under (HDF5 1.10 has no
  // H5Fget_fileno): another name is another file, reached through an external link.
  auto fileName = [](hid_t object) {
    const ssize_t n = H5Fget_name(object, nullptr, 0);
    if (n < 0) return std::string();
    std::vector<char> buf(static_cast<size_t>(n) + 1, '\0');
    H5Fget_name(object, buf.data(), buf.size());
    return std::string(buf.data());
  };
  const std::string home = fileName(dataset);
  const bool sameFile = !home.empty() && home == fileName(file);
  if (!sameFile) {
    throw DataError(where(path, name) + "it is reached through an external link (it lives in another file)." +
                    selfContained);
  }
  checkFilters(dcpl.get(), path, name);
  checkStorage(dataset, dcpl.get(), layout, info, path, name, fileBytes);
}

}  // namespace forge::data
