// What a person watching or inspecting a run sees: tables, progress lines, the metrics
// files and the TensorBoard record framing.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/table.h"
#include "trainer/config/config.h"
#include "trainer/report/metrics_log.h"
#include "trainer/report/plot.h"
#include "trainer/report/progress.h"
#include "trainer/report/tensorboard/tensorboard.h"

namespace forge::train {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> linesOf(const fs::path& p) {
  std::vector<std::string> out;
  std::ifstream in(p);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

bool hasControl(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7F) return true;
  }
  return false;
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::string p = (fs::temp_directory_path() / "forge-run-output-XXXXXX").string();
    path = mkdtemp(p.data());
  }
  ~TempDir() { fs::remove_all(path); }
};

TEST(Table, ColumnsAlignAndNumbersRightAlign) {
  Table t({"name", "count"}, {Table::Align::kLeft, Table::Align::kRight});
  t.row({"fc1.weight", "200,704"}).row({"b", "7"});
  auto lines = t.lines("  ");
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "  name          count");
  EXPECT_EQ(lines[1], "  ----------  -------");
  EXPECT_EQ(lines[2], "  fc1.weight  200,704");
  EXPECT_EQ(lines[3], "  b                 7");
  // Without headers: key-value rows, no rule, no trailing blanks.
  Table kv({"", ""});
  kv.row({"loss", "0.3"}).row({"accuracy", "89%"});
  EXPECT_EQ(kv.str(), "loss      0.3\naccuracy  89%\n");
  EXPECT_THROW(t.row({"a", "b", "c"}), Error);
}

TEST(Json, NumbersReadBackExactlyAndStringsAreEscaped) {
  for (double v : {0.1, 1.0 / 3, 1e-300, 123456789.125, -2.5}) {
    EXPECT_EQ(std::strtod(jsonNumber(v).c_str(), nullptr), v) << jsonNumber(v);
  }
  EXPECT_EQ(jsonNumber(NAN), "null");
  EXPECT_EQ(jsonNumber(0.5), "0.5");
  EXPECT_EQ(jsonQuote("a\"b\\c\nd\x01"), "\"a\\\"b\\\\c\\nd\\u0001\"");
}

TEST(Progress, TheBarFitsTheTerminalAndSaysWhereTheEpochIs) {
  ProgressState s;
  s.epoch = 3;
  s.epochs = 10;
  s.step = 117;
  s.steps = 469;
  s.loss = 0.34126;
  s.samplesPerS = 58210.4;
  s.dataWaitShare = 0.004;
  s.elapsed = 1.0;
  // Too narrow for everything: cut, never wrapped (a wrapped line cannot be redrawn).
  EXPECT_EQ(progressBar(s, 40, false).size(), 39u);
  for (int columns : {80, 100, 200}) {
    for (bool unicode : {false, true}) {
      std::string bar = progressBar(s, columns, unicode);
      size_t width = 0;
      for (unsigned char c : bar) width += (c & 0xC0) != 0x80;
      EXPECT_LT(width, static_cast<size_t>(columns)) << bar;
      EXPECT_FALSE(hasControl(bar)) << bar;
      EXPECT_NE(bar.find("epoch 3/10"), std::string::npos) << bar;
      EXPECT_NE(bar.find("117/469"), std::string::npos) << bar;
      EXPECT_NE(bar.find("loss 0.3413"), std::string::npos) << bar;
      EXPECT_NE(bar.find("58,210 samples/s"), std::string::npos) << bar;
      EXPECT_NE(bar.find("data 0.4%"), std::string::npos) << bar;
      EXPECT_NE(bar.find("ETA 0:03"), std::string::npos) << bar;  // 352 steps left at 117 steps/s
    }
  }
  // A quarter done: a quarter of the ASCII bar's cells are filled.
  s.step = 100;
  s.steps = 400;
  std::string bar = progressBar(s, 120, false);
  auto open = bar.find('|'), close = bar.rfind('|');
  std::string cells = bar.substr(open + 1, close - open - 1);
  EXPECT_EQ(std::count(cells.begin(), cells.end(), '#') * 4, static_cast<long>(cells.size())) << bar;
  EXPECT_TRUE(bar.find_first_not_of(" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~") ==
              std::string::npos)
      << "ASCII mode is ASCII: " << bar;
}

TEST(Progress, PlainLinesCarryTheSameFactsWithoutControlCharacters) {
  ProgressState s{2, 5, 50, 200, 0.5, 1234, 0.25, 10};
  std::string line = progressLine(s);
  EXPECT_FALSE(hasControl(line));
  EXPECT_EQ(line, "epoch 2/5 step 50/200 (25%)  loss 0.5000  1,234 samples/s  data wait 25.0%  epoch ETA 0:30");
  EXPECT_EQ(clockText(3723), "1:02:03");
  EXPECT_EQ(clockText(65), "1:05");
  EXPECT_EQ(epochEta(ProgressState{}), 0);
  // Resumed at step 400 of 469, 10 steps done in 1 s this session: 59 steps left take 5.9 s.
  ProgressState resumed{1, 2, 410, 469, 0.5, 100, 0, 1.0, 10};
  EXPECT_DOUBLE_EQ(epochEta(resumed), 5.9);
  EXPECT_EQ(Progress::resolve("auto", true), Progress::Mode::kBar);
  EXPECT_EQ(Progress::resolve("auto", false), Progress::Mode::kLines);
  EXPECT_EQ(Progress::resolve("lines", true), Progress::Mode::kLines);
  EXPECT_EQ(Progress::resolve("off", true), Progress::Mode::kOff);
}

TEST(TensorBoard, Crc32cMatchesTheCastagnoliCheckValue) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // the standard check value of CRC-32C
  EXPECT_EQ(crc32c("", 0), 0u);
  uint32_t c = crc32c("123456789", 9);
  EXPECT_EQ(maskedCrc32c("123456789", 9), ((c >> 15) | (c << 17)) + 0xA282EAD8u);
}

// Walks the TFRecord framing of a file: every record's length and payload checksums hold.
std::vector<std::string> records(const std::string& bytes) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < bytes.size()) {
    EXPECT_LE(at + 12, bytes.size());
    uint64_t length;
    uint32_t lengthCrc, dataCrc;
    std::memcpy(&length, bytes.data() + at, 8);
    std::memcpy(&lengthCrc, bytes.data() + at + 8, 4);
    EXPECT_EQ(lengthCrc, maskedCrc32c(bytes.data() + at, 8));
    EXPECT_LE(at + 12 + length + 4, bytes.size());
    std::string payload = bytes.substr(at + 12, length);
    std::memcpy(&dataCrc, bytes.data() + at + 12 + length, 4);
    EXPECT_EQ(dataCrc, maskedCrc32c(payload.data(), payload.size()));
    out.push_back(payload);
    at += 12 + length + 4;
  }
  return out;
}

TEST(TensorBoard, EventFilesAreFramedRecordsOnePerScalar) {
  TempDir tmp;
  std::string path;
  {
    TensorBoardWriter w((tmp.path / "tb").string(), 1);
    w.scalar("epoch/train_loss", 0.25, 469, 1.7e9);
    w.scalar("epoch/eval_accuracy", 0.875, 469, 1.7e9);
    w.flush();
    path = w.path();
  }
  EXPECT_NE(fs::path(path).filename().string().find("events.out.tfevents."), std::string::npos);
  auto recs = records(slurp(path));
  ASSERT_EQ(recs.size(), 4u);  // file version, session start, two scalars
  EXPECT_NE(recs[0].find("brain.Event:2"), std::string::npos);
  EXPECT_NE(recs[2].find("epoch/train_loss"), std::string::npos);
  float v = 0.875f;
  EXPECT_NE(recs[3].find(std::string(reinterpret_cast<const char*>(&v), 4)), std::string::npos);
}

TEST(TensorBoard, AResumeDropsTheAbandonedPointsFromTheFiles) {
  TempDir tmp;
  const std::string dir = (tmp.path / "tb").string();
  std::string path;
  {
    TensorBoardWriter w(dir, 1);
    for (int64_t step : {10, 20, 30, 40}) w.scalar("step/train_loss", 1.0 / step, step, 1.7e9);
    w.flush();
    path = w.path();
  }
  // A crash cut the last record short.
  {
    std::ofstream out(path, std::ios::binary | std::ios::app);
    out << std::string("\x20\0\0\0\0\0\0\0\x01\x02", 10);
  }
  dropEventsAfter(dir, 20);
  auto recs = records(slurp(path));
  ASSERT_EQ(recs.size(), 4u);  // version, start, steps 10 and 20
  float v = 1.0f / 20;
  EXPECT_NE(recs[3].find(std::string(reinterpret_cast<const char*>(&v), 4)), std::string::npos);
  // Nothing to drop: the file stays as it is.
  auto before = fs::last_write_time(path);
  dropEventsAfter(dir, 100);
  EXPECT_EQ(fs::last_write_time(path), before);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);  // no temporary left
}

MetricsLog::Paths pathsIn(const TempDir& tmp, bool tensorboard) {
  return {(tmp.path / "metrics.jsonl").string(), (tmp.path / "metrics.csv").string(),
          tensorboard ? (tmp.path / "tb").string() : std::string()};
}

TEST(Metrics, ADivergedLossIsWrittenAsNotANumberNotLeftOut) {
  TempDir tmp;
  {
    MetricsLog m(pathsIn(tmp, false), metricColumns({"accuracy"}), std::nullopt);
    MetricsRecord r;
    r.type = "step";
    r.epoch = 1;
    r.step = 5;
    r.globalStep = 5;
    r.set("train_loss", NAN).set("lr", 0.1);
    m.write(r);
  }
  auto jsonl = linesOf(tmp.path / "metrics.jsonl");
  auto csv = linesOf(tmp.path / "metrics.csv");
  ASSERT_EQ(jsonl.size(), 1u);
  auto j = nlohmann::json::parse(jsonl[0]);
  EXPECT_TRUE(j["train_loss"].is_null()) << jsonl[0];
  EXPECT_EQ(j["lr"], 0.1) << jsonl[0];
  EXPECT_EQ(csv[1], "step,1,5,0,5,0,nan,,,,0.1,,,,,,");
}

TEST(Metrics, JsonlAndCsvHoldTheSameRecordsAndAResumeTrimsThem) {
  TempDir tmp;
  auto record = [](const char* type, int64_t epoch, int64_t step, int64_t global) {
    MetricsRecord r;
    r.type = type;
    r.epoch = epoch;
    r.step = step;
    r.epochSamples = 32 * step;
    r.globalStep = global;
    r.wallTime = 1.5e9;
    r.set("train_loss", 0.5 / global).set("lr", 0.1);
    if (std::string(type) == "epoch") r.set("eval_accuracy", 0.75);
    return r;
  };
  {
    MetricsLog m(pathsIn(tmp, true), metricColumns({"accuracy"}), std::nullopt);
    m.write(record("step", 1, 5, 5));
    m.write(record("epoch", 1, 10, 10));
    m.write(record("step", 2, 5, 15));
    m.write(record("epoch", 2, 10, 20));
  }
  auto jsonl = linesOf(tmp.path / "metrics.jsonl");
  auto csv = linesOf(tmp.path / "metrics.csv");
  ASSERT_EQ(jsonl.size(), 4u);
  ASSERT_EQ(csv.size(), 5u);
  EXPECT_EQ(csv[0], "type,epoch,step,epoch_samples,global_step,wall_time,train_loss,train_accuracy,eval_loss,"
                    "eval_accuracy,lr,samples_per_s,data_wait_share,comm_share,seconds,grad_norm,skipped_steps");
  // Fields in column order, only those that apply.
  auto epoch = nlohmann::ordered_json::parse(jsonl[1]);
  std::vector<std::string> keys;
  for (const auto& [k, v] : epoch.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"type", "epoch", "step", "epoch_samples", "global_step", "wall_time",
                                            "train_loss", "eval_accuracy", "lr"}))
      << jsonl[1];
  EXPECT_EQ(epoch["type"], "epoch");
  EXPECT_EQ(epoch["global_step"], 10);
  EXPECT_EQ(epoch["wall_time"], 1.5e9);
  EXPECT_EQ(epoch["train_loss"], 0.05);
  EXPECT_EQ(epoch["eval_accuracy"], 0.75);
  EXPECT_EQ(csv[2], "epoch,1,10,320,10,1500000000,0.05,,,0.75,0.1,,,,,,");
  EXPECT_EQ(csv[1], "step,1,5,160,5,1500000000,0.1,,,,0.1,,,,,,");

  // Resumed at global step 10 (the end of epoch 1): later records go, new ones follow.
  {
    MetricsLog m(pathsIn(tmp, true), metricColumns({"accuracy"}), ResumePoint{{1, 0}, 10});
    m.write(record("step", 2, 5, 15));
  }
  jsonl = linesOf(tmp.path / "metrics.jsonl");
  csv = linesOf(tmp.path / "metrics.csv");
  ASSERT_EQ(jsonl.size(), 3u);
  ASSERT_EQ(csv.size(), 4u);
  EXPECT_EQ(nlohmann::json::parse(jsonl[2])["global_step"], 15);
  EXPECT_EQ(csv[3].substr(0, 16), "step,2,5,160,15,");
  // A fresh run starts the files (and the TensorBoard folder) anew.
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path / "tb"), fs::directory_iterator()), 2);
  { MetricsLog m(pathsIn(tmp, true), metricColumns({"accuracy"}), std::nullopt); }
  EXPECT_EQ(linesOf(tmp.path / "metrics.jsonl").size(), 0u);
  EXPECT_EQ(linesOf(tmp.path / "metrics.csv").size(), 1u);
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path / "tb"), fs::directory_iterator()), 1);

  MetricsTable t = readMetricsCsv((tmp.path / "metrics.csv").string());
  EXPECT_EQ(t.column("global_step"), 4);
  EXPECT_EQ(t.column("nonsense"), -1);
}

// A 2-rank run (10 steps of 64 samples per epoch) went into epoch 3; resumed on 3 ranks
// from its checkpoint at 2 epochs + 384 samples, it counts 7 steps per epoch, so its global
// step there is 2 * 7 + 2 = 16, below the 2-rank epoch 2 record's 20. The trim follows
// progress: everything up to 2 epochs + 384 samples stays, in the files and in TensorBoard.
TEST(Metrics, AResumeOnAnotherWorldSizeTrimsByProgressNotByGlobalStep) {
  TempDir tmp;
  auto record = [](const char* type, int64_t epoch, int64_t step, int64_t samples, int64_t global, double wall) {
    MetricsRecord r;
    r.type = type;
    r.epoch = epoch;
    r.step = step;
    r.epochSamples = samples;
    r.globalStep = global;
    r.wallTime = wall;
    r.set("train_loss", 1.0 / global);
    return r;
  };
  {
    MetricsLog m(pathsIn(tmp, true), metricColumns({}), std::nullopt);
    m.write(record("step", 1, 5, 320, 5, 1.0));
    m.write(record("epoch", 1, 10, 640, 10, 2.0));
    m.write(record("step", 2, 5, 320, 15, 3.0));
    m.write(record("epoch", 2, 10, 640, 20, 4.0));
    m.write(record("step", 3, 5, 320, 25, 5.0));  // 2 epochs + 320: kept
    m.write(record("step", 3, 8, 512, 28, 6.0));  // 2 epochs + 512: past the checkpoint
  }
  {
    MetricsLog m(pathsIn(tmp, true), metricColumns({}), ResumePoint{{2, 384}, 16});
    m.write(record("step", 3, 3, 576, 17, 7.0));
  }
  std::vector<std::pair<int64_t, double>> kept;
  for (const auto& line : linesOf(tmp.path / "metrics.jsonl")) {
    auto j = nlohmann::json::parse(line);
    kept.emplace_back(j["global_step"].get<int64_t>(), j["wall_time"].get<double>());
  }
  EXPECT_EQ(kept, (std::vector<std::pair<int64_t, double>>{{5, 1.0}, {10, 2.0}, {15, 3.0}, {20, 4.0}, {25, 5.0},
                                                            {17, 7.0}}));
  auto csv = linesOf(tmp.path / "metrics.csv");
  ASSERT_EQ(csv.size(), 7u);
  EXPECT_EQ(csv[5].substr(0, 18), "step,3,5,320,25,5,");
  // TensorBoard: the same points, the dropped record's gone; the session starts past the
  // kept points (25), so that TensorBoard drops none of them.
  std::vector<std::string> tb;
  for (const auto& f : fs::directory_iterator(tmp.path / "tb")) {
    for (const auto& r : records(slurp(f.path().string()))) tb.push_back(r);
  }
  size_t scalars = 0;
  for (const auto& r : tb) scalars += r.find("step/train_loss") != std::string::npos ? 1 : 0;
  EXPECT_EQ(scalars, 4u) << "steps 5, 15, 25 and the new 17";
}

TEST(Metrics, AValueOutsideTheRunsColumnsIsAnError) {
  TempDir tmp;
  MetricsLog m(pathsIn(tmp, false), metricColumns({"accuracy"}), std::nullopt);
  MetricsRecord r;
  r.type = "step";
  r.set("train_top5", 0.5);
  EXPECT_THROW(m.write(r), Error);
}

TEST(Metrics, ATasksMetricsAreItsColumns) {
  EXPECT_EQ(metricColumns({"mae", "r2"}),
            (std::vector<std::string>{"train_loss", "train_mae", "train_r2", "eval_loss", "eval_mae", "eval_r2", "lr",
                                      "samples_per_s", "data_wait_share", "comm_share", "seconds", "grad_norm",
                                      "skipped_steps"}));
}

TEST(Config, TheLogSectionIsValidated) {
  Config c = parseConfig("data:\n  path: x.h5\nlog:\n  progress: lines\n  every_steps: 7\n", "t.yaml");
  EXPECT_EQ(c.log.progress, "lines");
  EXPECT_EQ(c.log.everySteps, 7);
  EXPECT_TRUE(c.log.tensorboard);
  EXPECT_THROW(parseConfig("data:\n  path: x.h5\nlog:\n  progress: fancy\n", "t.yaml"), ConfigError);
  EXPECT_THROW(parseConfig("data:\n  path: x.h5\nlog:\n  every_s: 0\n", "t.yaml"), ConfigError);
  c = parseConfig("data:\n  path: x.h5\n", "t.yaml", {"run.epochs=3"});
  EXPECT_EQ(c.overrides, std::vector<std::string>{"run.epochs=3"});
}

}  // namespace
}  // namespace forge::train
