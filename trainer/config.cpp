#include "trainer/config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/strings.h"
#include "trainer/models/model_registry.h"

namespace forge::train {
namespace {

const std::vector<std::string> kSections = {"run", "model", "data", "optimizer", "schedule", "checkpoint",
                                            "distributed", "log"};
const std::map<std::string, std::vector<std::string>> kKeys = {
    {"run", {"dir", "seed", "epochs", "threads", "device", "precision"}},
    {"data",
     {"path", "train_split", "eval_split", "features", "labels", "batch_size", "eval_batch_size", "shuffle",
      "drop_last", "prefetch", "buffer_mb", "non_finite", "normalize"}},
    {"data.normalize", {"scale", "mean", "std", "stats"}},
    {"optimizer",
     {"name", "lr", "momentum", "dampening", "nesterov", "weight_decay", "betas", "eps", "accumulate_steps"}},
    {"schedule", {"name", "warmup_steps", "step_epochs", "gamma", "min_lr"}},
    {"checkpoint", {"every_epochs", "every_steps", "keep_last", "async"}},
    {"distributed",
     {"backend", "timeout_s", "bucket_cap_mb", "first_bucket_cap_mb", "rebuild_buckets", "overlap",
      "allow_unused_parameters", "broadcast_buffers"}},
    {"log", {"progress", "every_s", "every_steps", "tensorboard"}},
};

// Where a value came from: the file (with line) or a --set option.
struct Source {
  std::string file;
  std::set<std::string> overridden;  // dotted keys set by --set

  std::string where(const std::string& dotted, const YAML::Mark& mark) const {
    if (overridden.count(dotted)) return "--set " + dotted;
    if (!mark.is_null()) return concat(file, ":", mark.line + 1);
    return file;
  }
};

[[noreturn]] void fail(const std::string& where, const std::string& msg) {
  throw ConfigError(concat("config error in ", where, ": ", msg));
}

template <typename T>
const char* typeName();
template <> const char* typeName<int64_t>() { return "an integer"; }
template <> const char* typeName<uint64_t>() { return "a non-negative integer"; }
template <> const char* typeName<int>() { return "an integer"; }
template <> const char* typeName<double>() { return "a number"; }
template <> const char* typeName<bool>() { return "true or false"; }
template <> const char* typeName<std::string>() { return "a string"; }
template <> const char* typeName<std::vector<int64_t>>() { return "a list of integers"; }
template <> const char* typeName<std::vector<double>>() { return "a list of numbers"; }

std::string describe(const YAML::Node& n) {
  if (n.IsMap()) return "a map";
  if (n.IsSequence()) return "a list";
  if (n.IsNull()) return "nothing";
  return "'" + n.Scalar() + "'";
}

// Reads the keys of one (possibly nested) section and rejects the ones it does not know.
class Section {
 public:
  Section(const YAML::Node& node, std::string name, const Source& src) : node_(node), name_(std::move(name)), src_(src) {
    if (node_ && !node_.IsNull() && !node_.IsMap()) {
      fail(src_.where(name_, node_.Mark()), concat("'", name_, "' must be a map of keys, got ", describe(node_)));
    }
  }

  template <typename T>
  bool read(const std::string& key, T& out) const {
    if (!node_ || !node_.IsMap()) return false;
    YAML::Node v = node_[key];
    if (!v) return false;
    try {
      if constexpr (std::is_same_v<T, std::string>) {
        if (!v.IsScalar()) throw YAML::BadConversion(v.Mark());
      }
      if constexpr (std::is_same_v<T, uint64_t>) {
        if (!v.IsScalar() || v.Scalar().find('-') != std::string::npos) throw YAML::BadConversion(v.Mark());
      }
      out = v.as<T>();
    } catch (const YAML::Exception&) {
      fail(src_.where(dotted(key), v.Mark()), concat(dotted(key), " must be ", typeName<T>(), ", got ", describe(v)));
    }
    return true;
  }

  // A value or a list of values (data.path: one file or several; normalize.mean: one number
  // or one per feature).
  template <typename T>
  bool readOneOrMany(const std::string& key, std::vector<T>& out) const {
    if (!node_ || !node_.IsMap()) return false;
    YAML::Node v = node_[key];
    if (!v) return false;
    try {
      if (v.IsSequence()) {
        out.clear();
        for (const auto& e : v) {
          if (!e.IsScalar()) throw YAML::BadConversion(e.Mark());
          out.push_back(e.as<T>());
        }
      } else {
        if (!v.IsScalar()) throw YAML::BadConversion(v.Mark());
        out = {v.as<T>()};
      }
    } catch (const YAML::Exception&) {
      fail(src_.where(dotted(key), v.Mark()),
           concat(dotted(key), " must be ", typeName<T>(), " or a list of them, got ", describe(v)));
    }
    return true;
  }

  Section child(const std::string& key) const {
    YAML::Node v = node_ && node_.IsMap() ? node_[key] : YAML::Node();
    return Section(v, dotted(key), src_);
  }

  void rejectUnknown(const std::vector<std::string>& known, const std::string& context = "") const {
    if (!node_ || !node_.IsMap()) return;
    for (const auto& kv : node_) {
      std::string key = kv.first.as<std::string>();
      if (std::find(known.begin(), known.end(), key) != known.end()) continue;
      std::string hint = nearest(key, known);
      std::string msg = concat("unknown key '", key, "' in '", name_, "'", context);
      msg += hint.empty() ? concat(" (valid keys: ", join(known), ")") : concat(" (did you mean '", hint, "'?)");
      fail(src_.where(dotted(key), kv.first.Mark()), msg);
    }
  }

  // For range checks after reading.
  void require(bool ok, const std::string& key, const std::string& msg) const {
    if (ok) return;
    YAML::Node v = node_ && node_.IsMap() ? node_[key] : YAML::Node();
    fail(src_.where(dotted(key), v ? v.Mark() : node_ ? node_.Mark() : YAML::Mark::null_mark()),
         concat(dotted(key), " ", msg));
  }

  // `value` (read from `key`) must be one of `choices`; `what` names the kind ("an optimizer").
  void requireOneOf(const std::string& key, const std::string& value, const std::vector<std::string>& choices,
                    const std::string& what) const {
    if (std::find(choices.begin(), choices.end(), value) != choices.end()) return;
    std::string hint = nearest(value, choices);
    require(false, key, concat("'", value, "' is not ", what, " (",
                               hint.empty() ? "use " + join(choices) : "did you mean '" + hint + "'?", ")"));
  }

  std::string dotted(const std::string& key) const { return name_ + "." + key; }

 private:
  static std::string join(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
    return out;
  }

  YAML::Node node_;
  std::string name_;
  const Source& src_;
};

void applyOverride(YAML::Node& root, const std::string& assignment, Source& src) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError(concat("config error in --set ", assignment, ": expected key=value, e.g. --set optimizer.lr=0.01"));
  }
  std::string key = assignment.substr(0, eq);
  std::string value = assignment.substr(eq + 1);
  auto parts = split(key, '.');
  for (const auto& p : parts) {
    if (p.empty()) throw ConfigError(concat("config error in --set ", assignment, ": empty key segment in '", key, "'"));
  }
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw ConfigError(concat("config error in --set ", assignment, ": value is not valid YAML: ", e.msg));
  }
  YAML::Node cur = root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (!cur[parts[i]] || !cur[parts[i]].IsMap()) cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
    YAML::Node next = cur[parts[i]];
    cur.reset(next);
  }
  cur[parts.back()] = parsed;
  src.overridden.insert(key);
  // An unknown top-level section is reported against this option too.
  src.overridden.insert(parts.front());
}

}  // namespace

std::vector<std::string> configKeys() {
  std::vector<std::string> out;
  for (const auto& [section, keys] : kKeys) {
    for (const auto& k : keys) out.push_back(section + "." + k);
  }
  out.push_back("model.name");
  out.push_back("model.init_from");
  for (const auto& name : modelNames()) {
    for (const auto& k : modelKeys(name)) out.push_back("model." + k + " (" + name + ")");
  }
  return out;
}

Config parseConfig(const std::string& yamlText, const std::string& sourceName,
                   const std::vector<std::string>& overrides) {
  Source src{sourceName, {}};
  YAML::Node root;
  try {
    root = YAML::Load(yamlText);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(concat("config error in ", sourceName, ":", e.mark.line + 1, ": invalid YAML: ", e.msg));
  }
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw ConfigError(concat("config error in ", sourceName, ": the top level must be a map of sections"));
  for (const auto& o : overrides) applyOverride(root, o, src);

  // Unknown sections first: a typo there would hide every key below it.
  for (const auto& kv : root) {
    std::string key = kv.first.as<std::string>();
    if (std::find(kSections.begin(), kSections.end(), key) != kSections.end()) continue;
    std::string hint = nearest(key, kSections);
    fail(src.where(key, kv.first.Mark()),
         concat("unknown key '", key, "'", hint.empty() ? " (valid sections: run, model, data, optimizer, schedule, checkpoint, distributed, log)"
                                                       : concat(" (did you mean '", hint, "'?)")));
  }

  Config c;
  c.sourcePath = sourceName;
  c.overrides = overrides;

  Section run(root["run"], "run", src);
  run.rejectUnknown(kKeys.at("run"));
  run.read("dir", c.run.dir);
  run.read("seed", c.run.seed);
  run.read("epochs", c.run.epochs);
  run.read("threads", c.run.threads);
  run.read("device", c.run.device);
  run.read("precision", c.run.precision);
  run.requireOneOf("device", c.run.device, {"auto", "cpu", "cuda"}, "a device");
  run.requireOneOf("precision", c.run.precision, {"fp32", "bf16"}, "a precision");
  run.require(!(c.run.precision == "bf16" && c.run.device == "cpu"), "precision",
              "bf16 (autocast with fp32 master weights) is GPU-only: use run.device: cuda (or auto on a GPU "
              "machine), or precision: fp32");
  run.require(!c.run.dir.empty(), "dir", "must not be empty");
  run.require(c.run.epochs >= 1, "epochs", concat("must be at least 1, got ", c.run.epochs));
  run.require(c.run.threads >= 0, "threads", "must be 0 (automatic) or a positive count");

  Section model(root["model"], "model", src);
  model.read("name", c.model.name);
  model.requireOneOf("name", c.model.name, modelNames(), "a known model");
  auto keys = modelKeys(c.model.name);
  keys.insert(keys.begin(), {"name", "init_from"});
  model.rejectUnknown(keys, concat(" for model '", c.model.name, "'"));
  model.read("in_features", c.model.inFeatures);
  model.read("hidden", c.model.hidden);
  model.read("num_classes", c.model.numClasses);
  model.read("dropout", c.model.dropout);
  model.read("input_shape", c.model.inputShape);
  model.read("channels", c.model.channels);
  model.read("init_from", c.model.initFrom);
  model.require(c.model.inFeatures >= 1, "in_features", "must be positive");
  model.require(c.model.hidden >= 1, "hidden", "must be positive");
  model.require(c.model.numClasses >= 2, "num_classes", "must be at least 2");
  model.require(c.model.dropout >= 0 && c.model.dropout < 1, "dropout", "must be in [0, 1)");
  model.require(c.model.inputShape.size() == 3 && c.model.inputShape[0] > 0 && c.model.inputShape[1] >= 4 &&
                    c.model.inputShape[2] >= 4,
                "input_shape", "must be [channels, height, width] with height and width at least 4");
  model.require(c.model.channels.size() == 2 && c.model.channels[0] > 0 && c.model.channels[1] > 0, "channels",
                "must be two positive channel counts, e.g. [16, 32]");

  Section data(root["data"], "data", src);
  data.rejectUnknown(kKeys.at("data"));
  data.readOneOrMany("path", c.data.paths);
  data.read("train_split", c.data.trainSplit);
  data.read("eval_split", c.data.evalSplit);
  data.read("features", c.data.features);
  data.read("labels", c.data.labels);
  data.read("batch_size", c.data.batchSize);
  data.read("eval_batch_size", c.data.evalBatchSize);
  data.read("shuffle", c.data.shuffle);
  data.read("drop_last", c.data.dropLast);
  data.read("prefetch", c.data.prefetch);
  data.read("buffer_mb", c.data.bufferMb);
  data.read("non_finite", c.data.nonFinite);
  bool anyPath = false;
  for (const auto& p : c.data.paths) anyPath = anyPath || !p.empty();
  data.require(anyPath, "path", "is required: the HDF5 file (or a list of files / glob patterns) to train on");
  data.require(c.data.bufferMb > 0, "buffer_mb", "must be positive");
  data.requireOneOf("non_finite", c.data.nonFinite, {"error", "skip"}, "a policy");
  data.require(c.data.batchSize >= 1, "batch_size", concat("must be at least 1, got ", c.data.batchSize));
  data.require(c.data.evalBatchSize >= 1, "eval_batch_size", "must be at least 1");
  data.require(c.data.prefetch >= 1, "prefetch", "must be at least 1");
  Section norm = data.child("normalize");
  norm.rejectUnknown(kKeys.at("data.normalize"));
  norm.read("scale", c.data.normalize.scale);
  norm.readOneOrMany("mean", c.data.normalize.mean);
  norm.readOneOrMany("std", c.data.normalize.std);
  norm.read("stats", c.data.normalize.stats);
  bool positive = !c.data.normalize.std.empty();
  for (double v : c.data.normalize.std) positive = positive && v > 0;
  norm.require(positive, "std", "must be positive (one number, or one per channel or feature)");
  norm.require(!c.data.normalize.mean.empty(), "mean", "must not be an empty list");
  norm.requireOneOf("stats", c.data.normalize.stats, {"config", "auto"}, "a statistics source");

  Section opt(root["optimizer"], "optimizer", src);
  opt.rejectUnknown(kKeys.at("optimizer"));
  opt.read("name", c.optimizer.name);
  opt.read("lr", c.optimizer.lr);
  opt.read("momentum", c.optimizer.momentum);
  opt.read("dampening", c.optimizer.dampening);
  opt.read("nesterov", c.optimizer.nesterov);
  opt.read("weight_decay", c.optimizer.weightDecay);
  opt.read("betas", c.optimizer.betas);
  opt.read("eps", c.optimizer.eps);
  opt.read("accumulate_steps", c.optimizer.accumulateSteps);
  opt.requireOneOf("name", c.optimizer.name, {"sgd", "adam", "adamw"}, "an optimizer");
  opt.require(c.optimizer.lr > 0, "lr", concat("must be positive, got ", c.optimizer.lr));
  opt.require(c.optimizer.momentum >= 0 && c.optimizer.momentum < 1, "momentum", "must be in [0, 1)");
  opt.require(c.optimizer.weightDecay >= 0, "weight_decay", "must not be negative");
  opt.require(!c.optimizer.nesterov || (c.optimizer.momentum > 0 && c.optimizer.dampening == 0), "nesterov",
              "needs momentum > 0 and dampening 0");
  opt.require(c.optimizer.betas.size() == 2 && c.optimizer.betas[0] >= 0 && c.optimizer.betas[0] < 1 &&
                  c.optimizer.betas[1] >= 0 && c.optimizer.betas[1] < 1,
              "betas", "must be two numbers in [0, 1)");
  opt.require(c.optimizer.eps > 0, "eps", "must be positive");
  opt.require(c.optimizer.accumulateSteps >= 1, "accumulate_steps", "must be at least 1");

  Section sched(root["schedule"], "schedule", src);
  sched.rejectUnknown(kKeys.at("schedule"));
  sched.read("name", c.schedule.name);
  sched.read("warmup_steps", c.schedule.warmupSteps);
  sched.read("step_epochs", c.schedule.stepEpochs);
  sched.read("gamma", c.schedule.gamma);
  sched.read("min_lr", c.schedule.minLr);
  sched.requireOneOf("name", c.schedule.name, {"constant", "step", "cosine"}, "a schedule");
  sched.require(c.schedule.warmupSteps >= 0, "warmup_steps", "must not be negative");
  sched.require(c.schedule.stepEpochs >= 1, "step_epochs", "must be at least 1");
  sched.require(c.schedule.gamma > 0 && c.schedule.gamma <= 1, "gamma", "must be in (0, 1]");
  sched.require(c.schedule.minLr >= 0 && c.schedule.minLr <= c.optimizer.lr, "min_lr", "must be in [0, optimizer.lr]");

  Section ck(root["checkpoint"], "checkpoint", src);
  ck.rejectUnknown(kKeys.at("checkpoint"));
  ck.read("every_epochs", c.checkpoint.everyEpochs);
  ck.read("every_steps", c.checkpoint.everySteps);
  ck.read("keep_last", c.checkpoint.keepLast);
  ck.read("async", c.checkpoint.async);
  ck.require(c.checkpoint.everyEpochs >= 0, "every_epochs", "must be 0 (off) or positive");
  ck.require(c.checkpoint.everySteps >= 0, "every_steps", "must be 0 (off) or positive");
  ck.require(c.checkpoint.keepLast >= 0, "keep_last", "must be 0 (keep all) or positive");

  Section dist(root["distributed"], "distributed", src);
  dist.rejectUnknown(kKeys.at("distributed"));
  dist.read("backend", c.distributed.backend);
  dist.read("timeout_s", c.distributed.timeoutS);
  dist.read("bucket_cap_mb", c.distributed.bucketCapMb);
  dist.read("first_bucket_cap_mb", c.distributed.firstBucketCapMb);
  dist.read("rebuild_buckets", c.distributed.rebuildBuckets);
  dist.read("overlap", c.distributed.overlap);
  dist.read("allow_unused_parameters", c.distributed.allowUnusedParameters);
  dist.read("broadcast_buffers", c.distributed.broadcastBuffers);
  dist.require(c.distributed.bucketCapMb > 0, "bucket_cap_mb", "must be positive");
  dist.require(c.distributed.firstBucketCapMb > 0, "first_bucket_cap_mb", "must be positive");
  dist.requireOneOf("backend", c.distributed.backend, {"auto", "mpi", "nccl"}, "a backend");
  dist.require(!(c.distributed.backend == "nccl" && c.run.device == "cpu"), "backend",
               "nccl works on CUDA tensors: set run.device: cuda (or auto), or backend: mpi");
  dist.require(c.distributed.timeoutS > 0, "timeout_s", "must be positive");

  Section lg(root["log"], "log", src);
  lg.rejectUnknown(kKeys.at("log"));
  lg.read("progress", c.log.progress);
  lg.read("every_s", c.log.everyS);
  lg.read("every_steps", c.log.everySteps);
  lg.read("tensorboard", c.log.tensorboard);
  lg.requireOneOf("progress", c.log.progress, {"auto", "bar", "lines", "off"}, "a progress mode");
  lg.require(c.log.everyS > 0, "every_s", "must be positive (seconds between progress lines)");
  lg.require(c.log.everySteps >= 0, "every_steps", "must be 0 (off) or positive");

  YAML::Emitter out;
  out << root;
  c.resolved = std::string(out.c_str()) + "\n";
  return c;
}

Config loadConfig(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) throw ConfigError(concat("config error: cannot read config file '", path, "' (no such file or not readable)"));
  std::stringstream text;
  text << in.rdbuf();
  return parseConfig(text.str(), path, overrides);
}

}  // namespace forge::train
