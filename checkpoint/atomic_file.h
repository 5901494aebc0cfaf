// Files that are never half-written: the bytes go to a temporary file in the same folder,
// which is fsync'ed, renamed over the target, and the folder fsync'ed. A crash at any moment
// leaves either the old file or the new one, never a mix.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace forge::ckpt {

// Throws CheckpointError naming the path and the OS error (e.g. "No space left on device");
// on failure the temporary file is removed and any existing target is untouched.
void writeFileAtomically(const std::string& path, const std::vector<char>& bytes);

// Receives the bytes of a file in order, in pieces of any size.
using ByteSink = std::function<void(const char* data, size_t size)>;
// The same, streaming: `produce` writes the contents through the sink it is given, so a
// large file never has to exist in memory whole.
void writeFileAtomically(const std::string& path, const std::function<void(const ByteSink&)>& produce);

// Makes `link` a symbolic link to `target` (a name relative to the link's folder), replacing
// any link or file there by a rename: a reader sees the old link or the new one, never none.
// CheckpointError naming the link and the OS error when it cannot.
void replaceSymlinkAtomically(const std::string& link, const std::string& target);

// Moves the file `from` into the folder `dir` (created when missing) under its own name, or
// <name>.1, <name>.2, ... when that name is taken there: never replacing a file (the rename
// itself refuses to, so a file that appears meanwhile is not lost either). Returns the new
// path; CheckpointError naming both paths and the OS error when it cannot.
std::string moveWithoutReplacing(const std::string& from, const std::string& dir);

// Creates a new, empty folder `base`, or <base>.2, <base>.3, ... when that one exists, and
// returns its path: a folder that holds what one event set aside, never mixed with another's.
std::string createNewFolder(const std::string& base);

// Whole file; CheckpointError naming the path when it cannot be read.
std::vector<char> readWholeFile(const std::string& path);

}  // namespace forge::ckpt
