// forge data: write a data set in forge's HDF5 layout.
#include <chrono>
#include <cmath>
#include <iostream>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "data/converters.h"
#include "trainer/app/commands.h"

namespace forge::train {
namespace {

const char* kDataHelp = R"(usage:
  forge data fashion-mnist --out FILE.h5 [--source DIR]
      Reads the four Fashion-MNIST idx files (gzipped or not) from DIR (default: the
      folder of Debian's dataset-fashion-mnist package, /usr/share/datasets/fashion-mnist)
      and writes train/features (60000 x 784 uint8), train/labels (int64) and the same
      under test/ (10000 samples).
  forge data synthetic --out FILE.h5 --samples N --features D --classes C [--seed S]
      Writes N training samples (and N/5 test samples) of D float32 features drawn
      around one random centre per class; a model can learn it. Default seed 0.
      Streams block by block, so files far larger than memory can be made.
  forge data synthetic --out FILE.h5 --samples N --features D --targets T [--noise S] [--seed S]
      Regression: features ~ N(0, 1), T float32 targets = a random linear map of them
      plus Gaussian noise of standard deviation S (default 0.1). No model can reach a
      mean squared error below S^2 (the noise floor, printed and kept in the file).
  forge data text --out FILE.h5 --context T [--test-fraction F] FILE_OR_FOLDER...
      Byte-level sequences for language modelling (task.name: language_model): rows of
      T + 1 bytes (uint8, no labels: each byte's target is the next). The last F of each
      file (default 0.1) is held out as the test split. A folder contributes its regular
      files in name order; symbolic links and binary files are left out (said).
      Prints the byte-unigram entropy of the held-out text, the loss a model that
      ignores context would at best reach.
  forge data from-npy --out FILE.h5 --train-features X.npy [--train-labels Y.npy]
                      [--test-features X.npy [--test-labels Y.npy]]
      NumPy arrays into the layout: features N x D... (uint8, float32 or float64 values,
      any sample shape, e.g. N x C x H x W; or integer token ids N x L of any width),
      labels N of any integer type (classes, stored as int64) or float32 / float64 of
      any shape (regression targets). Without labels (language modelling) the test split
      needs none either.
Files are written in chunks of about 1 MiB (what streaming reads), to a temporary file
that is renamed into place.
)";

}  // namespace

int cmdData(int argc, char** argv) {
  if (auto code = subcommandOrHelp(argc, argv, kDataHelp, "data")) return *code;
  std::string kind = argv[2];
  if (kind == "fashion-mnist") {
    Args a = parseArgs(argc, argv, 3, {"out", "source"}, {}, kDataHelp);
    if (a.help) return std::cout << kDataHelp, 0;
    if (!a.has("out")) usage("forge data fashion-mnist needs --out FILE.h5", kDataHelp);
    std::string source = a.one("source", data::kFashionMnistDebianDir);
    log::info("data", "converting Fashion-MNIST from ", source, " ...");
    data::convertFashionMnist(source, a.one("out"));
    log::info("data", "wrote ", a.one("out"), " (train: 60,000 x 784 uint8, test: 10,000 x 784 uint8)");
    return 0;
  }
  if (kind == "synthetic") {
    Args a = parseArgs(argc, argv, 3, {"out", "samples", "features", "classes", "targets", "noise", "seed"}, {},
                       kDataHelp);
    if (a.help) return std::cout << kDataHelp, 0;
    for (const char* req : {"out", "samples", "features"}) {
      if (!a.has(req)) usage(concat("forge data synthetic needs --", req), kDataHelp);
    }
    if (a.has("classes") == a.has("targets")) {
      usage("forge data synthetic needs either --classes C (classification) or --targets T (regression)", kDataHelp);
    }
    if (a.has("noise") && !a.has("targets")) usage("forge data synthetic: --noise goes with --targets", kDataHelp);
    data::SyntheticSpec spec;
    spec.samples = parseInt(a.one("samples"), "samples");
    spec.features = parseInt(a.one("features"), "features");
    if (a.has("classes")) spec.classes = parseInt(a.one("classes"), "classes");
    if (a.has("targets")) {
      spec.targets = parseInt(a.one("targets"), "targets");
      if (spec.targets < 1) usage("forge data synthetic: --targets must be at least 1", kDataHelp);
      spec.noise = parseDouble(a.one("noise", "0.1"), "noise");
    }
    spec.seed = static_cast<uint64_t>(parseInt(a.one("seed", "0"), "seed"));
    auto lastReport = std::chrono::steady_clock::now();
    spec.progress = [&](const std::string& split, int64_t done, int64_t total) {
      auto now = std::chrono::steady_clock::now();
      if (done < total && now - lastReport < std::chrono::seconds(5)) return;
      lastReport = now;
      log::info("data", split, ": ", withThousands(done), " / ", withThousands(total), " samples written");
    };
    data::writeSynthetic(spec, a.one("out"));
    log::info("data", "wrote ", a.one("out"), " (", withThousands(spec.samples), " train and ",
              withThousands(std::max<int64_t>(1, spec.samples / 5)), " test samples, ", spec.features, " features, ",
              spec.targets > 0 ? concat(spec.targets, " float target(s) with noise ", spec.noise,
                                        ": noise floor, the least reachable mean squared error, ",
                                        spec.noise * spec.noise)
                               : concat(spec.classes, " classes"),
              ")");
    return 0;
  }
  if (kind == "text") {
    Args a = parseArgs(argc, argv, 3, {"out", "context", "test-fraction"}, {}, kDataHelp);
    if (a.help) return std::cout << kDataHelp, 0;
    for (const char* req : {"out", "context"}) {
      if (!a.has(req)) usage(concat("forge data text needs --", req), kDataHelp);
    }
    if (a.positional.empty()) usage("forge data text needs the text files or folders to read", kDataHelp);
    data::TextSpec spec;
    spec.inputs = a.positional;
    spec.context = parseInt(a.one("context"), "context");
    spec.testFraction = parseDouble(a.one("test-fraction", "0.1"), "test-fraction");
    data::TextSummary t = data::convertText(spec, a.one("out"));
    if (t.skipped > 0) log::info("data", "left out ", t.skipped, " symbolic link(s) and binary file(s)");
    log::info("data", "wrote ", a.one("out"), ": ", t.files, " text file(s); train ", withThousands(t.trainSequences),
              " sequences (", withThousands(t.trainBytes), " bytes), test ", withThousands(t.testSequences),
              " sequences (", withThousands(t.testBytes), " bytes), ", spec.context + 1, " bytes each");
    log::info("data", "held-out byte-unigram entropy ", fixed(t.unigramEntropyNats, 4), " nats/byte (",
              fixed(t.unigramEntropyNats / std::log(2.0), 4), " bits): the loss a model that ignores context reaches "
              "at best");
    return 0;
  }
  if (kind == "from-npy") {
    Args a = parseArgs(argc, argv, 3, {"out", "train-features", "train-labels", "test-features", "test-labels"}, {},
                       kDataHelp);
    if (a.help) return std::cout << kDataHelp, 0;
    for (const char* req : {"out", "train-features"}) {
      if (!a.has(req)) usage(concat("forge data from-npy needs --", req), kDataHelp);
    }
    if (a.has("test-labels") && !a.has("test-features")) {
      usage("forge data from-npy: --test-labels needs --test-features", kDataHelp);
    }
    if (a.has("test-features") && a.has("train-labels") != a.has("test-labels")) {
      usage("forge data from-npy: give labels for both splits or for neither (language modelling)", kDataHelp);
    }
    std::vector<data::NpySplit> splits{{"train", a.one("train-features"), a.one("train-labels", "")}};
    if (a.has("test-features")) splits.push_back({"test", a.one("test-features"), a.one("test-labels", "")});
    data::convertNpy(splits, a.one("out"));
    log::info("data", "wrote ", a.one("out"), " (", splits.size(), " split(s))");
    return 0;
  }
  std::string hint = nearest(kind, {"fashion-mnist", "synthetic", "text", "from-npy"});
  usage(concat("unknown data source '", kind, "'", hint.empty() ? "" : concat(" (did you mean '", hint, "'?)")), kDataHelp);
}

}  // namespace forge::train
