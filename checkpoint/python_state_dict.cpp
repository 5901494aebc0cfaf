#include "checkpoint/python_state_dict.h"

#include <cstring>
#include <map>

#include "checkpoint/atomic_file.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/torch_zip.h"
#include "checkpoint/torch_zip_reader.h"
#include "core/error.h"

namespace forge::ckpt {
namespace {

// Protocol-2 pickle rewriting (what torch.save writes): GLOBAL collections.OrderedDict,
// called with no arguments, becomes EMPTY_DICT; the trailing state that BUILD would attach
// as _metadata is cut off (the pickle stops after the dict). Everything else is copied
// opcode by opcode; BUILD anywhere else is refused.
class PickleRewriter {
 public:
  PickleRewriter(const char* data, size_t size, const std::string& source)
      : data_(data), size_(size), source_(source) {}

  std::string run() {
    out_.reserve(size_);
    while (i_ < size_) {
      const unsigned char op = static_cast<unsigned char>(data_[i_]);
      const size_t start = i_++;
      switch (op) {
        case 'c': global(start); continue;                    // GLOBAL
        case 'q': case 'r': put(op == 'q', start); continue;  // BINPUT, LONG_BINPUT
        case 'h': case 'j': get(op == 'h', start); continue;  // BINGET, LONG_BINGET
        case ')': emptyTuple(); continue;                     // EMPTY_TUPLE
        case '}':                                             // EMPTY_DICT
          if (metadataFollows()) {
            // The state dict is complete below it: drop the metadata (and the BUILD that
            // would attach it, which LibTorch cannot apply to a dict) and stop here.
            out_.push_back('.');
            return std::move(out_);
          }
          out_.push_back('}');
          continue;
        default: break;
      }
      const size_t arg = argumentLength(op);
      if (pendingOrderedDict_) fail("OrderedDict used other than as OrderedDict()");
      need(arg);
      i_ += arg;
      out_.append(data_ + start, i_ - start);
      if (op == '.') break;
    }
    return std::move(out_);
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw CheckpointError(concat("'", source_, "' is not a state dict forge can read: ", why));
  }
  void need(size_t n) const {
    if (i_ + n > size_) fail("the pickle is truncated");
  }
  uint32_t u32(size_t at) const {
    uint32_t v;
    std::memcpy(&v, data_ + at, 4);
    return v;
  }
  // The memo index argument of BINPUT / BINGET (1 byte) or their LONG_ forms (4 bytes).
  uint32_t memoIndex(bool oneByte) {
    size_t n = oneByte ? 1 : 4;
    need(n);
    uint32_t k = oneByte ? static_cast<unsigned char>(data_[i_]) : u32(i_);
    i_ += n;
    return k;
  }

  // GLOBAL module\nname\n
  void global(size_t start) {
    size_t a = std::string_view(data_ + i_, size_ - i_).find('\n');
    size_t b = a == std::string::npos ? a : std::string_view(data_ + i_ + a + 1, size_ - i_ - a - 1).find('\n');
    if (a == std::string::npos || b == std::string::npos) fail("bad GLOBAL");
    std::string module(data_ + i_, a), name(data_ + i_ + a + 1, b);
    i_ += a + 1 + b + 1;
    if (module == "collections" && name == "OrderedDict") {
      pendingOrderedDict_ = true;
      return;  // emit nothing: REDUCE will produce the dict
    }
    out_.append(data_ + start, i_ - start);
  }

  void put(bool oneByte, size_t start) {
    uint32_t k = memoIndex(oneByte);
    if (pendingOrderedDict_) {  // memoizing the class itself: remember it, emit nothing
      memoIsOrderedDict_[k] = true;
      return;
    }
    memoIsOrderedDict_.erase(k);
    out_.append(data_ + start, i_ - start);
  }

  void get(bool oneByte, size_t start) {
    uint32_t k = memoIndex(oneByte);
    if (memoIsOrderedDict_.count(k)) {
      pendingOrderedDict_ = true;
      return;
    }
    out_.append(data_ + start, i_ - start);
  }

  // With the class pending, followed by REDUCE = OrderedDict().
  void emptyTuple() {
    if (pendingOrderedDict_) {
      need(1);
      if (data_[i_] != 'R') fail("OrderedDict built with arguments");
      ++i_;
      pendingOrderedDict_ = false;
      out_.push_back('}');
      return;
    }
    out_.push_back(')');
  }

  // Whether the EMPTY_DICT just read starts the _metadata state that BUILD would set.
  bool metadataFollows() const {
    size_t j = i_;
    if (j < size_ && data_[j] == 'q') j += 2;
    else if (j < size_ && data_[j] == 'r') j += 5;
    static const char kMetadata[] = "X\x09\x00\x00\x00_metadata";
    return j + sizeof kMetadata - 1 <= size_ && std::memcmp(data_ + j, kMetadata, sizeof kMetadata - 1) == 0;
  }

  // Bytes of argument after the opcode `op` (any the rewriter copies as it is).
  size_t argumentLength(unsigned char op) const {
    switch (op) {
      case 0x80: return 1;  // PROTO
      case 'K': return 1;   // BININT1
      case 'M': return 2;   // BININT2
      case 'J': return 4;   // BININT
      case 'G': return 8;   // BINFLOAT
      case 'X':             // BINUNICODE
      case 'T':             // BINSTRING
      case 'B':             // BINBYTES
        need(4);
        return 4 + u32(i_);
      case 'U':   // SHORT_BINSTRING
      case 'C':   // SHORT_BINBYTES
      case 0x8a:  // LONG1
      case 0x8c:  // SHORT_BINUNICODE
        need(1);
        return 1 + static_cast<unsigned char>(data_[i_]);
      case 0x8b: need(4); return 4 + u32(i_);  // LONG4
      case 0x95: return 8;                     // FRAME
      case 'Q': case '(': case 't': case 0x85: case 0x86: case 0x87: case 'R': case ']': case 'a':
      case 'e': case 's': case 'u': case 'N': case 0x88: case 0x89: case '.': case '0': case 0x94:
        return 0;
      default:  // includes BUILD outside the _metadata state
        fail(concat("unsupported pickle opcode 0x", std::hex, static_cast<int>(op)));
    }
  }

  const char* data_;
  size_t size_;
  const std::string& source_;
  size_t i_ = 0;  // the next byte to read
  std::string out_;
  std::map<uint32_t, bool> memoIsOrderedDict_;
  bool pendingOrderedDict_ = false;  // the class is on top of the stack
};

std::string rewritePickle(const char* data, size_t size, const std::string& source) {
  return PickleRewriter(data, size, source).run();
}

std::vector<std::pair<std::string, at::Tensor>> pythonStateDictOf(const std::vector<char>& bytes,
                                                                   const std::string& path) {
  TorchZipReader zip(bytes, path);
  auto [pkl, pklSize] = zip.record("data.pkl");
  std::string pickle = rewritePickle(pkl, pklSize, path);
  c10::IValue value;
  try {
    value = zip.unpickle(pickle.data(), pickle.size());
  } catch (const c10::Error& e) {
    std::string why = e.what_without_backtrace();
    throw CheckpointError(concat("'", path, "' is not a state dict forge can read: ", why.substr(0, why.find('\n'))));
  }
  zip.checkUnread();
  if (!value.isGenericDict()) throw CheckpointError(concat("'", path, "' does not hold a dict"));
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& kv : value.toGenericDict()) {
    if (!kv.key().isString() || !kv.value().isTensor()) {
      throw CheckpointError(concat("'", path, "' is not a state dict: it maps something other than names to tensors"));
    }
    out.emplace_back(kv.key().toStringRef(), kv.value().toTensor());
  }
  return out;
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> loadPythonStateDict(const std::string& path) {
  return pythonStateDictOf(readWholeFile(path), path);
}

std::vector<std::pair<std::string, at::Tensor>> loadModelState(const std::string& path) {
  std::vector<char> bytes = readWholeFile(path);
  verifyTorchZip(bytes, path);
  // A forge checkpoint is verified as every command verifies one (a damaged one is an error
  // in the same words everywhere, never retried as something else); anything else may be a
  // state dict from Python.
  if (holdsForgeCheckpoint(bytes)) return decode(bytes, path).modelState;
  return pythonStateDictOf(bytes, path);
}

}  // namespace forge::ckpt
