// forge data: write a data set in forge's HDF5 layout.
#include <chrono>
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
  forge data from-npy --out FILE.h5 --train-features X.npy --train-labels Y.npy
                      [--test-features X.npy --test-labels Y.npy]
      NumPy arrays into the layout: features N x D... (uint8, float32 or float64; any
      sample shape, e.g. N x C x H x W), labels N (any integer type, stored as int64).
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
    Args a = parseArgs(argc, argv, 3, {"out", "samples", "features", "classes", "seed"}, {}, kDataHelp);
    if (a.help) return std::cout << kDataHelp, 0;
    for (const char* req : {"out", "samples", "features", "classes"}) {
      if (!a.has(req)) usage(concat("forge data synthetic needs --", req), kDataHelp);
    }
    data::SyntheticSpec spec;
    spec.samples = parseInt(a.one("samples"), "samples");
    spec.features = parseInt(a.one("features"), "features");
    spec.classes = parseInt(a.one("classes"), "classes");
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
              spec.classes, " classes)");
    return 0;
  }
  if (kind == "from-npy") {
    Args a = parseArgs(argc, argv, 3, {"out", "train-features", "train-labels", "test-features", "test-labels"}, {},
                       kDataHelp);
    if (a.help) return std::cout << kDataHelp, 0;
    for (const char* req : {"out", "train-features", "train-labels"}) {
      if (!a.has(req)) usage(concat("forge data from-npy needs --", req), kDataHelp);
    }
    if (a.has("test-features") != a.has("test-labels")) {
      usage("forge data from-npy: --test-features and --test-labels go together", kDataHelp);
    }
    std::vector<data::NpySplit> splits{{"train", a.one("train-features"), a.one("train-labels")}};
    if (a.has("test-features")) splits.push_back({"test", a.one("test-features"), a.one("test-labels")});
    data::convertNpy(splits, a.one("out"));
    log::info("data", "wrote ", a.one("out"), " (", splits.size(), " split(s))");
    return 0;
  }
  std::string hint = nearest(kind, {"fashion-mnist", "synthetic", "from-npy"});
  usage(concat("unknown data source '", kind, "'", hint.empty() ? "" : concat(" (did you mean '", hint, "'?)")), kDataHelp);
}

}  // namespace forge::train
