// What every converter (data/converters.h) does with its output file.
#pragma once

#include <hdf5.h>

#include <functional>
#include <string>
#include <vector>

namespace forge::data {

// DataError when `out` names one of the `inputs` (the same file by another path too): the
// conversion would replace what it reads.
void refuseOverwritingInput(const std::string& out, const std::vector<std::string>& inputs);

// Creates `out`'s temporary sibling, lets `fill` write into it, then renames it into place:
// a failed conversion leaves nothing behind. DataError for an empty `out` or a folder.
void writeAtomically(const std::string& out, const std::function<void(hid_t)>& fill);

}  // namespace forge::data
