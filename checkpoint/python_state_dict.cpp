#include "checkpoint/python_state_dict.h"

#include <caffe2/serialize/in_memory_adapter.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/unpickler.h>

#include <cstring>
#include <map>

#include "checkpoint/atomic_file.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/torch_zip.h"
#include "core/error.h"

namespace forge::ckpt {
namespace {

// Protocol-2 pickle rewriting (what torch.save writes): GLOBAL collections.OrderedDict,
// called with no arguments, becomes EMPTY_DICT; the trailing state that BUILD would attach
// as _metadata is cut off (the pickle stops after the dict). Everything else is copied
// opcode by opcode; BUILD anywhere else is refused.
std::string rewritePickle(const char* data, size_t size, const std::string& source) {
  std::string out;
  out.reserve(size);
  std::map<uint32_t, bool> memoIsOrderedDict;
  bool pendingOrderedDict = false;  // the class is on top of the stack
  size_t i = 0;
  auto fail = [&](const std::string& why) -> std::string {
    throw CheckpointError(concat("'", source, "' is not a state dict forge can read: ", why));
  };
  auto need = [&](size_t n) {
    if (i + n > size) fail("the pickle is truncated");
  };
  auto u32 = [&](size_t at) {
    uint32_t v;
    std::memcpy(&v, data + at, 4);
    return v;
  };
  // The memo index argument of BINPUT / BINGET (1 byte) or their LONG_ forms (4 bytes).
  auto memoIndex = [&](bool oneByte) {
    size_t n = oneByte ? 1 : 4;
    need(n);
    uint32_t k = oneByte ? static_cast<unsigned char>(data[i]) : u32(i);
    i += n;
    return k;
  };
  while (i < size) {
    unsigned char op = static_cast<unsigned char>(data[i]);
    size_t start = i++;
    size_t arg = 0;  // bytes of argument after the opcode
    switch (op) {
      case 0x80: arg = 1; break;  // PROTO
      case 'c': {                 // GLOBAL module\nname\n
        size_t a = std::string_view(data + i, size - i).find('\n');
        size_t b = a == std::string::npos ? a : std::string_view(data + i + a + 1, size - i - a - 1).find('\n');
        if (a == std::string::npos || b == std::string::npos) fail("bad GLOBAL");
        std::string module(data + i, a), name(data + i + a + 1, b);
        i += a + 1 + b + 1;
        if (module == "collections" && name == "OrderedDict") {
          pendingOrderedDict = true;
          continue;  // emit nothing: REDUCE will produce the dict
        }
        out.append(data + start, i - start);
        continue;
      }
      case 'q':  // BINPUT
      case 'r': {  // LONG_BINPUT
        uint32_t k = memoIndex(op == 'q');
        if (pendingOrderedDict) {  // memoizing the class itself: remember it, emit nothing
          memoIsOrderedDict[k] = true;
          continue;
        }
        memoIsOrderedDict.erase(k);
        out.append(data + start, i - start);
        continue;
      }
      case 'h':  // BINGET
      case 'j': {  // LONG_BINGET
        uint32_t k = memoIndex(op == 'h');
        if (memoIsOrderedDict.count(k)) {
          pendingOrderedDict = true;
          continue;
        }
        out.append(data + start, i - start);
        continue;
      }
      case ')':  // EMPTY_TUPLE: with the class pending, followed by REDUCE = OrderedDict()
        if (pendingOrderedDict) {
          need(1);
          if (data[i] != 'R') fail("OrderedDict built with arguments");
          ++i;
          pendingOrderedDict = false;
          out.push_back('}');
          continue;
        }
        out.push_back(static_cast<char>(op));
        continue;
      case '}': {  // EMPTY_DICT: the start of the _metadata state that BUILD would set?
        size_t j = i;
        if (j < size && data[j] == 'q') j += 2;
        else if (j < size && data[j] == 'r') j += 5;
        static const char kMetadata[] = "X\x09\x00\x00\x00_metadata";
        if (j + sizeof kMetadata - 1 <= size && std::memcmp(data + j, kMetadata, sizeof kMetadata - 1) == 0) {
          // The state dict is complete below it: drop the metadata (and the BUILD that
          // would attach it, which LibTorch cannot apply to a dict) and stop here.
          out.push_back('.');
          return out;
        }
        out.push_back('}');
        continue;
      }
      case 'K': arg = 1; break;     // BININT1
      case 'M': arg = 2; break;     // BININT2
      case 'J': arg = 4; break;     // BININT
      case 'G': arg = 8; break;     // BINFLOAT
      case 'X':                     // BINUNICODE
      case 'T':                     // BINSTRING
      case 'B':                     // BINBYTES
        need(4);
        arg = 4 + u32(i);
        break;
      case 'U':     // SHORT_BINSTRING
      case 'C':     // SHORT_BINBYTES
      case 0x8a:    // LONG1
      case 0x8c:    // SHORT_BINUNICODE
        need(1);
        arg = 1 + static_cast<unsigned char>(data[i]);
        break;
      case 0x8b: need(4); arg = 4 + u32(i); break;  // LONG4
      case 0x95: arg = 8; break;                    // FRAME
      case 'Q': case '(': case 't': case 0x85: case 0x86: case 0x87: case 'R': case ']': case 'a':
      case 'e': case 's': case 'u': case 'N': case 0x88: case 0x89: case '.': case '0': case 0x94:
        arg = 0;
        break;
      default:  // includes BUILD outside the _metadata state
        fail(concat("unsupported pickle opcode 0x", std::hex, static_cast<int>(op)));
    }
    if (pendingOrderedDict) fail("OrderedDict used other than as OrderedDict()");
    need(arg);
    i += arg;
    out.append(data + start, i - start);
    if (op == '.') break;
  }
  return out;
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> loadPythonStateDict(const std::string& path) {
  std::vector<char> bytes = readWholeFile(path);
  if (!isTorchZip(bytes)) throw CheckpointError(concat("'", path, "' is not a torch.save archive"));
  caffe2::serialize::PyTorchStreamReader reader(
      std::make_shared<caffe2::serialize::MemoryReadAdapter>(bytes.data(), bytes.size()));
  auto [pkl, pklSize] = reader.getRecord("data.pkl");
  std::string pickle = rewritePickle(static_cast<const char*>(pkl.get()), pklSize, path);
  size_t offset = 0;
  torch::jit::Unpickler unpickler(
      [&](char* buf, size_t n) {
        n = std::min(n, pickle.size() - offset);
        std::memcpy(buf, pickle.data() + offset, n);
        offset += n;
        return n;
      },
      nullptr, nullptr, [&](const std::string& name) { return std::get<0>(reader.getRecord("data/" + name)); },
      at::Device(at::kCPU));
  c10::IValue value;
  try {
    value = unpickler.parse_ivalue();
  } catch (const c10::Error& e) {
    std::string why = e.what_without_backtrace();
    throw CheckpointError(concat("'", path, "' is not a state dict forge can read: ", why.substr(0, why.find('\n'))));
  }
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

std::vector<std::pair<std::string, at::Tensor>> loadModelState(const std::string& path) {
  try {
    return load(path).modelState;
  } catch (const CheckpointError&) {
    // Not a forge checkpoint: perhaps a plain state dict from Python.
  }
  return loadPythonStateDict(path);
}

}  // namespace forge::ckpt
