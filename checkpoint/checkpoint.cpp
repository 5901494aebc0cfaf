#include "checkpoint/checkpoint.h"

#include <c10/util/Exception.h>

#include <algorithm>

#include "checkpoint/atomic_file.h"
#include "checkpoint/fields.h"
#include "checkpoint/torch_zip.h"
#include "checkpoint/torch_zip_reader.h"
#include "core/error.h"
#include "core/hash.h"

namespace forge::ckpt {
namespace {

using c10::IValue;
using GenericDict = c10::impl::GenericDict;

GenericDict stringDict() { return GenericDict(c10::StringType::get(), c10::AnyType::get()); }

// FNV-1a over the fields, with each tensor's bytes in as their CRC-32 (zlib's, fast; FNV
// over every byte would cap save throughput). A save passes the CRC-32s its archive's
// records were written with, so the tensors are not read a second time.
struct Hasher {
  explicit Hasher(const RecordCrcs& crcs) : crcs(crcs) {}
  const RecordCrcs& crcs;
  uint64_t h = kFnvOffset;
  void bytes(const void* data, size_t n) { h = fnv1a(data, n, h); }
  void text(const std::string& s) { bytes(s.data(), s.size() + 1); }
  void integer(int64_t v) { bytes(&v, sizeof v); }
  void tensor(const at::Tensor& t) {
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    for (auto d : c.sizes()) integer(d);
    text(std::string(c10::toString(c.scalar_type())));
    integer(static_cast<int64_t>(crcs.of(c.data_ptr(), c.nbytes())));
  }
  // Tensors inside any nesting of dicts and lists (the optimizer state); scalars by value.
  void ivalue(const IValue& v) {
    if (v.isTensor()) {
      tensor(v.toTensor());
    } else if (v.isGenericDict()) {
      for (const auto& kv : v.toGenericDict()) {
        ivalue(kv.key());
        ivalue(kv.value());
      }
    } else if (v.isList()) {
      for (const auto& e : v.toListRef()) ivalue(e);
    } else if (v.isString()) {
      text(v.toStringRef());
    } else if (v.isInt()) {
      integer(v.toInt());
    } else if (v.isDouble()) {
      double d = v.toDouble();
      bytes(&d, sizeof d);
    } else if (v.isBool()) {
      integer(v.toBool() ? 1 : 0);
    }
  }
};

uint64_t checksumOf(const Checkpoint& ck, const RecordCrcs& crcs = RecordCrcs()) {
  Hasher h(crcs);
  for (const auto& [name, t] : ck.modelState) {
    h.text(name);
    h.tensor(t);
  }
  h.ivalue(ck.optimizerState);
  h.integer(ck.epoch);
  h.integer(ck.step);
  h.integer(ck.globalStep);
  h.integer(ck.worldSize);
  h.text(ck.config);
  h.bytes(&ck.bestMetric, sizeof ck.bestMetric);
  h.text(ck.bestMetricName);
  h.text(ck.forgeVersion);
  for (const auto& r : ck.rngStates) h.tensor(r);
  if (!ck.schedule.isNone()) h.ivalue(ck.schedule);
  if (!ck.sampler.isNone()) h.ivalue(ck.sampler);
  if (ck.epochSamples >= 0) h.integer(ck.epochSamples);  // absent from files of earlier versions
  for (int64_t i : ck.bucketOrder) h.integer(i);          // likewise
  // The parts by name: the order of a dict read back is not the order written.
  std::vector<const std::pair<std::string, IValue>*> parts;
  for (const auto& p : ck.parts) parts.push_back(&p);
  std::sort(parts.begin(), parts.end(), [](const auto* a, const auto* b) { return a->first < b->first; });
  for (const auto* p : parts) {
    h.text(p->first);
    h.ivalue(p->second);
  }
  return h.h;
}

// A file written before epoch_samples existed: each rank's sampler position (samples it
// consumed in the epoch: step * batch size * accumulate_steps) times the ranks that wrote
// it. -1 when it cannot be told (files older still, with no sampler record, mid-epoch).
int64_t derivedEpochSamples(const Checkpoint& ck) {
  if (ck.step == 0) return 0;
  if (!ck.sampler.isGenericDict()) return -1;
  auto sampler = ck.sampler.toGenericDict();
  auto position = sampler.find("position");
  if (position == sampler.end() || !position->value().isInt()) return -1;
  auto world = sampler.find("world_size");
  const int64_t ranks = world != sampler.end() && world->value().isInt() ? world->value().toInt() : ck.worldSize;
  return position->value().toInt() * ranks;
}

const IValue& field(const GenericDict& d, const char* key, const std::string& source) {
  auto it = d.find(key);
  if (it == d.end()) throw CheckpointError(concat("checkpoint '", source, "' has no '", key, "' entry (not a forge checkpoint?)"));
  return it->value();
}

int64_t intField(const GenericDict& d, const char* key, const std::string& source) {
  const IValue& v = field(d, key, source);
  if (!v.isInt()) throw CheckpointError(concat("checkpoint '", source, "': '", key, "' is not an integer"));
  return v.toInt();
}

const std::string& stringField(const GenericDict& d, const char* key, const std::string& source) {
  const IValue& v = field(d, key, source);
  if (!v.isString()) throw CheckpointError(concat("checkpoint '", source, "': '", key, "' is not a string"));
  return v.toStringRef();
}

IValue toIValueWith(const Checkpoint& ck, int64_t checksum) {
  GenericDict model(c10::StringType::get(), c10::TensorType::get());
  for (const auto& [name, t] : ck.modelState) model.insert(name, t);
  GenericDict d = stringDict();
  d.insert(fields::kModel, model);
  d.insert(fields::kOptimizer, ck.optimizerState.isNone() ? IValue(stringDict()) : ck.optimizerState);
  d.insert(fields::kEpoch, ck.epoch);
  d.insert(fields::kStep, ck.step);
  d.insert(fields::kGlobalStep, ck.globalStep);
  if (std::isnan(ck.bestMetric)) {
    d.insert(fields::kBestMetric, IValue());
  } else {
    d.insert(fields::kBestMetric, ck.bestMetric);
  }
  d.insert(fields::kBestMetricName, ck.bestMetricName);
  d.insert(fields::kWorldSize, ck.worldSize);
  d.insert(fields::kConfig, ck.config);
  d.insert(fields::kForgeVersion, ck.forgeVersion);
  c10::impl::GenericList rng(c10::AnyType::get());  // untyped: weights_only refuses typed lists
  for (const auto& r : ck.rngStates) rng.push_back(r);
  d.insert(fields::kRngStates, rng);
  if (!ck.schedule.isNone()) d.insert(fields::kSchedule, ck.schedule);
  if (!ck.sampler.isNone()) d.insert(fields::kSampler, ck.sampler);
  if (ck.epochSamples >= 0) d.insert(fields::kEpochSamples, ck.epochSamples);
  if (!ck.bucketOrder.empty()) {
    c10::impl::GenericList order(c10::AnyType::get());  // a plain list of ints for Python
    for (int64_t i : ck.bucketOrder) order.push_back(i);
    d.insert(fields::kBucketOrder, order);
  }
  for (const auto& [name, state] : ck.parts) d.insert(name, state);
  d.insert(fields::kChecksum, checksum);
  return d;
}

}  // namespace

IValue Checkpoint::part(const std::string& name) const {
  for (const auto& [n, state] : parts) {
    if (n == name) return state;
  }
  return IValue();
}

IValue toIValue(const Checkpoint& ck) { return toIValueWith(ck, static_cast<int64_t>(checksumOf(ck))); }

Checkpoint fromIValue(const IValue& value, const std::string& source, const RecordCrcs& crcs) {
  if (!value.isGenericDict()) throw CheckpointError(concat("checkpoint '", source, "' does not hold a dict"));
  GenericDict d = value.toGenericDict();
  Checkpoint ck;
  const IValue& model = field(d, fields::kModel, source);
  if (!model.isGenericDict()) throw CheckpointError(concat("checkpoint '", source, "': model_state_dict is not a dict"));
  for (const auto& kv : model.toGenericDict()) {
    if (!kv.key().isString() || !kv.value().isTensor()) {
      throw CheckpointError(concat("checkpoint '", source, "': model_state_dict must map names to tensors"));
    }
    ck.modelState.emplace_back(kv.key().toStringRef(), kv.value().toTensor());
  }
  ck.optimizerState = field(d, fields::kOptimizer, source);
  ck.epoch = intField(d, fields::kEpoch, source);
  ck.step = intField(d, fields::kStep, source);
  ck.globalStep = intField(d, fields::kGlobalStep, source);
  const IValue& best = field(d, fields::kBestMetric, source);
  if (!best.isDouble() && !best.isNone()) {
    throw CheckpointError(concat("checkpoint '", source, "': 'best_metric' is not a number"));
  }
  ck.bestMetric = best.isDouble() ? best.toDouble() : std::nan("");
  ck.bestMetricName = stringField(d, fields::kBestMetricName, source);
  ck.worldSize = intField(d, fields::kWorldSize, source);
  ck.config = stringField(d, fields::kConfig, source);
  ck.forgeVersion = stringField(d, fields::kForgeVersion, source);
  auto rng = d.find(fields::kRngStates);
  if (rng != d.end()) {
    if (!rng->value().isList()) throw CheckpointError(concat("checkpoint '", source, "': 'rng_states' is not a list"));
    for (const auto& r : rng->value().toListRef()) {
      if (!r.isTensor()) throw CheckpointError(concat("checkpoint '", source, "': 'rng_states' holds a non-tensor"));
      ck.rngStates.push_back(r.toTensor());
    }
  }
  for (auto [key, out] : {std::pair<const char*, IValue*>{fields::kSchedule, &ck.schedule}, {fields::kSampler, &ck.sampler}}) {
    auto it = d.find(key);
    if (it == d.end()) continue;
    if (!it->value().isGenericDict()) throw CheckpointError(concat("checkpoint '", source, "': '", key, "' is not a dict"));
    *out = it->value();
  }
  if (d.contains(fields::kEpochSamples)) ck.epochSamples = intField(d, fields::kEpochSamples, source);
  auto order = d.find(fields::kBucketOrder);
  if (order != d.end()) {
    if (!order->value().isList()) throw CheckpointError(concat("checkpoint '", source, "': 'bucket_order' is not a list"));
    for (const auto& i : order->value().toListRef()) {
      if (!i.isInt()) throw CheckpointError(concat("checkpoint '", source, "': 'bucket_order' holds a non-integer"));
      ck.bucketOrder.push_back(i.toInt());
    }
  }
  for (const auto& kv : d) {
    if (!kv.key().isString() || fields::isKnown(kv.key().toStringRef())) continue;
    ck.parts.emplace_back(kv.key().toStringRef(), kv.value());
  }
  int64_t stored = intField(d, fields::kChecksum, source);
  if (static_cast<uint64_t>(stored) != checksumOf(ck, crcs)) throw CheckpointError(corruptMessage(source));
  return ck;
}

Progress progressOf(const Checkpoint& ck, const std::string& source) {
  const int64_t samples = ck.epochSamples >= 0 ? ck.epochSamples : derivedEpochSamples(ck);
  if (samples < 0) {
    throw CheckpointError(concat("checkpoint '", source, "' (forge ", ck.forgeVersion, ") stops at step ", ck.step,
                                 " of epoch ", ck.epoch + 1, " but records no sampler position, so how far into "
                                 "the epoch it is cannot be told; resume from it by path (--resume PATH) only if it "
                                 "is the newest"));
  }
  return Progress{ck.epoch, samples};
}

std::vector<char> encode(const Checkpoint& ck) { return toTorchZip(toIValue(ck)); }

bool holdsForgeCheckpoint(const std::vector<char>& bytes) {
  // Every forge checkpoint's pickle names this field; a Python state dict's never does. A
  // textual test, so that a forge checkpoint whose pickle was damaged is still told apart.
  const std::vector<char> pkl = pickleRecord(bytes);
  const std::string key = fields::kForgeVersion;
  return std::search(pkl.begin(), pkl.end(), key.begin(), key.end()) != pkl.end();
}

Checkpoint decode(const std::vector<char>& bytes, const std::string& source) {
  TorchZipReader zip(bytes, source);
  IValue value;
  try {
    auto [pickle, size] = zip.record("data.pkl");
    value = zip.unpickle(pickle, size);
  } catch (const c10::Error& e) {
    // A forge checkpoint whose pickle no longer parses was damaged (in a file of an earlier
    // version, which records no CRC-32 that would have said so above).
    if (holdsForgeCheckpoint(bytes)) throw CheckpointError(corruptMessage(source));
    throw CheckpointError(concat("checkpoint '", source, "' is a torch archive but not a forge checkpoint: it holds "
                                 "Python objects forge does not read (e.g. a state_dict saved as an OrderedDict, or a "
                                 "pickled class)"));
  }
  zip.checkUnread();
  try {
    // The tensors' CRC-32s were computed as their storages were read: the checksum reuses them.
    return fromIValue(value, source, zip.crcs());
  } catch (const c10::Error& e) {
    std::string why = e.what_without_backtrace();
    throw CheckpointError(concat("checkpoint '", source, "' has an unexpected layout: ", why.substr(0, why.find('\n'))));
  }
}

void save(const Checkpoint& ck, const std::string& path) {
  // The checksum sits in data.pkl, which the archive holds after the tensors: it is computed
  // from the CRC-32s a second thread worked out while the tensors were written (the zip's
  // own), and goes into the dict before the dict is pickled. The save then costs the write,
  // not a read pass more.
  IValue value = toIValueWith(ck, 0);
  auto final = [&](const RecordCrcs& crcs) {
    value.toGenericDict().insert_or_assign(fields::kChecksum, static_cast<int64_t>(checksumOf(ck, crcs)));
    return value;
  };
  writeFileAtomically(path, [&](const ByteSink& sink) { writeTorchZip(value, sink, final); });
}

Checkpoint load(const std::string& path) { return decode(readWholeFile(path), path); }

}  // namespace forge::ckpt
