// forge data text: files of text into byte sequences for language modelling.
#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/strings.h"
#include "data/converter_output.h"
#include "data/converters.h"
#include "data/hdf5_file.h"

namespace forge::data {

namespace fs = std::filesystem;

namespace {

// The files a text input names: itself, or a folder's regular files in name order.
std::vector<fs::path> textFiles(const std::vector<std::string>& inputs, int64_t& skippedLinks) {
  std::vector<fs::path> out;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<fs::path> here;
      for (const auto& e : fs::directory_iterator(in, ec)) {
        if (e.is_symlink()) {
          ++skippedLinks;
        } else if (e.is_regular_file()) {
          here.push_back(e.path());
        }
      }
      if (ec) throw DataError(concat("cannot list '", in, "': ", ec.message()));
      std::sort(here.begin(), here.end());
      out.insert(out.end(), here.begin(), here.end());
    } else if (fs::is_regular_file(in, ec)) {
      out.emplace_back(in);
    } else {
      throw DataError(concat("'", in, "' is no text file or folder", ec ? concat(" (", ec.message(), ")") : ""));
    }
  }
  return out;
}

std::string readFileBytes(const fs::path& p) {
  std::FILE* f = std::fopen(p.c_str(), "rb");
  if (f == nullptr) throw DataError(concat("cannot open '", p.string(), "': ", std::strerror(errno)));
  std::string bytes;
  char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.append(buf, got);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) throw DataError(concat("cannot read '", p.string(), "'"));
  return bytes;
}

// Rows of context + 1 bytes, stride context.
std::vector<uint8_t> sequencesOf(const std::string& stream, int64_t context, int64_t& rows) {
  const int64_t len = static_cast<int64_t>(stream.size());
  rows = len > context ? (len - 1) / context : 0;
  std::vector<uint8_t> out(static_cast<size_t>(rows * (context + 1)));
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out.data() + r * (context + 1), stream.data() + r * context, static_cast<size_t>(context + 1));
  }
  return out;
}

}  // namespace

TextSummary convertText(const TextSpec& spec, const std::string& out) {
  if (spec.context < 1) throw ConfigError("forge data text needs --context >= 1");
  if (!(spec.testFraction > 0 && spec.testFraction < 1)) {
    throw ConfigError("forge data text needs --test-fraction in (0, 1)");
  }
  if (spec.inputs.empty()) throw ConfigError("forge data text needs at least one text file or folder");
  TextSummary sum;
  std::string train, test;
  const std::vector<fs::path> files = textFiles(spec.inputs, sum.skipped);
  for (const auto& p : files) refuseOverwritingInput(out, {p.string()});
  for (const auto& p : files) {
    std::string bytes = readFileBytes(p);
    if (bytes.find('\0') < std::min<size_t>(bytes.size(), 8192)) {
      ++sum.skipped;  // binary (an index file, an image): not text to model
      continue;
    }
    ++sum.files;
    const size_t held = static_cast<size_t>(static_cast<double>(bytes.size()) * spec.testFraction);
    train.append(bytes, 0, bytes.size() - held);
    test.append(bytes, bytes.size() - held, held);
  }
  int64_t trainRows = 0, testRows = 0;
  std::vector<uint8_t> trainSeq = sequencesOf(train, spec.context, trainRows);
  std::vector<uint8_t> testSeq = sequencesOf(test, spec.context, testRows);
  if (trainRows == 0 || testRows == 0) {
    throw DataError(concat("the text (", withThousands(static_cast<int64_t>(train.size())), " training and ",
                           withThousands(static_cast<int64_t>(test.size())), " held-out bytes from ", sum.files,
                           " file(s)) is too short for one sequence of ", spec.context + 1,
                           " bytes in each split: give more text or a shorter --context"));
  }
  // The held-out targets: bytes 1 .. rows x context of the held-out stream.
  std::array<int64_t, 256> counts{};
  for (int64_t i = 1; i <= testRows * spec.context; ++i) ++counts[static_cast<uint8_t>(test[static_cast<size_t>(i)])];
  const double total = static_cast<double>(testRows * spec.context);
  for (int64_t c : counts) {
    if (c > 0) sum.unigramEntropyNats -= static_cast<double>(c) / total * std::log(static_cast<double>(c) / total);
  }
  const hsize_t width = static_cast<hsize_t>(spec.context + 1);
  writeAtomically(out, [&](hid_t file) {
    for (auto [name, rows, data] : {std::tuple<const char*, int64_t, const std::vector<uint8_t>*>{"train", trainRows, &trainSeq},
                                   {"test", testRows, &testSeq}}) {
      H5Id group = createGroup(file, name);
      writeDataset(file, std::string(name) + "/features", H5T_STD_U8LE, H5T_NATIVE_UINT8,
                   {static_cast<hsize_t>(rows), width}, streamingChunkRows(width), data->data());
      if (std::string(name) == "test") writeDoubleAttribute(group.get(), "unigram_entropy_nats", sum.unigramEntropyNats);
    }
  });
  sum.trainBytes = static_cast<int64_t>(train.size());
  sum.testBytes = static_cast<int64_t>(test.size());
  sum.trainSequences = trainRows;
  sum.testSequences = testRows;
  return sum;
}

}  // namespace forge::data
