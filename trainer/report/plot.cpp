#include "trainer/report/plot.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"

namespace forge::train {
namespace {

namespace fs = std::filesystem;

// Colour-blind-safe enough, and distinct on white (matplotlib's first six).
const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

std::string gnuplotQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string cell(const MetricsTable& t, const std::vector<std::string>& row, const std::string& column) {
  int c = t.column(column);
  if (c < 0 || c >= static_cast<int>(row.size()) || row[c].empty()) return "NaN";
  return row[c];
}

// A temporary folder removed on every path out.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "forge-plot-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw Error(concat("cannot create a temporary folder: ", std::strerror(errno)));
    path = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// Runs gnuplot on `script`; its stderr goes to `errors`. Returns the exit status, or 127
// when gnuplot cannot be started. posix_spawn: no code of ours runs between fork and exec.
int runGnuplot(const fs::path& script, const fs::path& errors) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, errors.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::string program = "gnuplot", path = script.string();
  char* argv[] = {program.data(), path.data(), nullptr};
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, "gnuplot", &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc == ENOENT) return 127;
  if (rc != 0) throw Error(concat("cannot start gnuplot: ", std::strerror(rc)));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw Error(concat("waiting for gnuplot failed: ", std::strerror(errno)));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

int MetricsTable::column(const std::string& name) const {
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i] == name) return static_cast<int>(i);
  }
  return -1;
}

MetricsTable readMetricsCsv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(concat("cannot read '", path, "' (is it a forge run dir? training writes metrics.csv there)"));
  MetricsTable t;
  std::string line;
  if (!std::getline(in, line)) throw ConfigError(concat("'", path, "' is empty"));
  t.columns = split(line, ',');
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto cells = split(line, ',');
    cells.resize(t.columns.size());
    t.rows.push_back(std::move(cells));
  }
  return t;
}

namespace {

// One run as the picture draws it: its epoch and step records as gnuplot data files.
struct PlotRun {
  std::string dir;
  std::string name;
  fs::path epochFile, stepFile;
  bool hasSteps = false;
  std::string metric;  // the task's first metric ("accuracy"), "" when the run records none
};

// Writes a run's data files into `tmp`; nullopt (with a warning) for a run without a
// finished epoch beside others, ConfigError for one alone. Raises `lastEpoch` to the run's.
std::optional<PlotRun> writeRunData(const std::string& runDir, size_t index, const fs::path& tmp, bool alone,
                                    double& lastEpoch) {
  const fs::path dir = runDir;
  MetricsTable t = readMetricsCsv((dir / "metrics.csv").string());
  for (const char* need : {"type", "epoch", "step"}) {
    if (t.column(need) < 0) throw ConfigError(concat((dir / "metrics.csv").string(), " has no '", need, "' column"));
  }
  // Steps per epoch, from the epoch records (their "step" is the epoch's step count), to
  // place step records at fractional epochs.
  // The task's first metric: the first train_<name> column besides train_loss.
  std::string metric;
  for (const auto& c : t.columns) {
    if (metric.empty() && c.rfind("train_", 0) == 0 && c != "train_loss" && t.column("eval_" + c.substr(6)) >= 0) {
      metric = c.substr(6);
    }
  }
  auto metricCell = [&](const std::vector<std::string>& row, const std::string& prefix) {
    return metric.empty() ? std::string("NaN") : cell(t, row, prefix + metric);
  };
  std::map<std::string, double> stepsIn;
  std::ostringstream epochs, steps;
  epochs << "# epoch train_loss train_" << (metric.empty() ? "-" : metric) << " eval_loss eval_"
         << (metric.empty() ? "-" : metric) << " lr samples_per_s\n";
  int nEpochs = 0;
  for (const auto& row : t.rows) {
    if (cell(t, row, "type") != "epoch") continue;
    stepsIn[cell(t, row, "epoch")] = std::stod(cell(t, row, "step"));
    lastEpoch = std::max(lastEpoch, std::stod(cell(t, row, "epoch")));
    ++nEpochs;
    epochs << cell(t, row, "epoch") << " " << cell(t, row, "train_loss") << " " << metricCell(row, "train_") << " "
           << cell(t, row, "eval_loss") << " " << metricCell(row, "eval_") << " " << cell(t, row, "lr") << " "
           << cell(t, row, "samples_per_s") << "\n";
  }
  if (nEpochs == 0) {
    const std::string why = concat((dir / "metrics.csv").string(), " holds no epoch record yet (the first epoch of ",
                                   dir.string(), " has not finished)");
    // Beside other runs, one that has just started is left out; alone, there is nothing to draw.
    if (alone) throw ConfigError(why);
    log::warn("plot", why, ": left out of the picture");
    return std::nullopt;
  }
  steps << "# epoch_position train_loss lr\n";
  int nSteps = 0;
  for (const auto& row : t.rows) {
    if (cell(t, row, "type") != "step") continue;
    auto it = stepsIn.find(cell(t, row, "epoch"));
    if (it == stepsIn.end() || it->second <= 0) continue;
    double x = std::stod(cell(t, row, "epoch")) - 1 + std::stod(cell(t, row, "step")) / it->second;
    steps << x << " " << cell(t, row, "train_loss") << " " << cell(t, row, "lr") << "\n";
    ++nSteps;
  }
  PlotRun run;
  run.dir = runDir;
  run.metric = metric;
  run.hasSteps = nSteps > 0;
  run.epochFile = tmp / concat("epochs", index, ".dat");
  run.stepFile = tmp / concat("steps", index, ".dat");
  std::ofstream(run.epochFile) << epochs.str();
  std::ofstream(run.stepFile) << steps.str();
  run.name = fs::absolute(dir).lexically_normal().filename().string();
  if (run.name.empty()) run.name = fs::absolute(dir).lexically_normal().parent_path().filename().string();
  return run;
}

// The gnuplot script: four panels (loss, accuracy, learning rate, throughput), one colour
// per run.
std::string plotScript(const PlotOptions& o, const std::vector<PlotRun>& runs, double lastEpoch) {
  std::string title = o.title;
  if (title.empty()) {
    for (size_t i = 0; i < runs.size(); ++i) title += (i ? ", " : "") + runs[i].name;
  }
  std::ostringstream s;
  s << "set terminal pngcairo size " << o.width << "," << o.height
    << " noenhanced font 'DejaVu Sans,11' background rgb 'white'\n"
    << "set output " << gnuplotQuote(o.out) << "\n"
    << "set datafile missing 'NaN'\n"
    << "set grid lc rgb '#dddddd'\n"
    << "set border lc rgb '#555555'\n"
    << "set key top right box opaque\n"
    << "set xlabel 'epoch'\n"
    // One x axis for all panels: the step records start before epoch 1 ends.
    << "set xrange [0:" << lastEpoch << "]\n"
    << (lastEpoch <= 20 ? "set xtics 1\n" : "")
    << "set multiplot layout 2,2 title " << gnuplotQuote("forge: " + title) << " font ',14'\n";
  auto panel = [&](const std::string& name, const std::string& ylabel, const std::vector<std::string>& parts) {
    s << "set title " << gnuplotQuote(name) << "\nset ylabel " << gnuplotQuote(ylabel) << "\n";
    s << "plot ";
    for (size_t i = 0; i < parts.size(); ++i) s << (i ? ", \\\n     " : "") << parts[i];
    s << "\n";
  };
  const bool several = runs.size() > 1;
  auto label = [&](size_t r, const std::string& what) {
    return gnuplotQuote(several ? runs[r].name + " " + what : what);
  };
  auto color = [&](size_t r) { return std::string(kColors[r % (sizeof kColors / sizeof *kColors)]); };
  // The metric panel shows the first run's first metric; a fraction named like an accuracy
  // is drawn in percent.
  const std::string metric = runs.front().metric;
  const bool percent = metric.find("accuracy") != std::string::npos;
  std::vector<std::string> loss, acc, lr, rate;
  for (size_t r = 0; r < runs.size(); ++r) {
    const std::string ef = gnuplotQuote(runs[r].epochFile.string());
    const std::string sf = gnuplotQuote(runs[r].stepFile.string());
    const std::string faint = "#B0" + color(r).substr(1);  // alpha: step records behind the epochs
    if (runs[r].hasSteps) {
      loss.push_back(concat(sf, " using 1:2 with lines lw 1 lc rgb '", faint, "' title ", label(r, "train (steps)")));
    }
    loss.push_back(concat(ef, " using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb '", color(r), "' title ",
                          label(r, "train")));
    loss.push_back(concat(ef, " using 1:4 with linespoints lw 2 dt 2 pt 5 ps 0.8 lc rgb '", color(r), "' title ",
                          label(r, "eval")));
    if (runs[r].metric == metric && !metric.empty()) {  // the first run's metric, where a run records it
      const std::string scale = percent ? "*100" : "";
      acc.push_back(concat(ef, " using 1:($3", scale, ") with linespoints lw 2 pt 7 ps 0.8 lc rgb '", color(r),
                           "' title ", label(r, "train")));
      acc.push_back(concat(ef, " using 1:($5", scale, ") with linespoints lw 2 dt 2 pt 5 ps 0.8 lc rgb '", color(r),
                           "' title ", label(r, "eval")));
    }
    if (runs[r].hasSteps) {
      lr.push_back(concat(sf, " using 1:3 with lines lw 2 lc rgb '", color(r), "' title ", label(r, "lr")));
    } else {
      lr.push_back(concat(ef, " using 1:6 with linespoints lw 2 pt 7 ps 0.8 lc rgb '", color(r), "' title ",
                          label(r, "lr")));
    }
    rate.push_back(concat(ef, " using 1:7 with linespoints lw 2 pt 7 ps 0.8 lc rgb '", color(r), "' title ",
                          label(r, "samples/s")));
  }
  // Keys where the curves are not: losses fall (top right is free), accuracies and
  // throughput sit high (bottom right), the cosine or step LR ends low (top right).
  s << "set key top right\n";
  panel("loss", "loss", loss);
  s << "set key bottom right\n";
  if (acc.empty()) {
    s << "set multiplot next\n";  // no metric recorded: the panel stays empty
  } else {
    panel(metric, percent ? "%" : metric, acc);
  }
  s << "set key top right\nset format y '%g'\n";
  panel("learning rate", "lr", lr);
  // From 0, with headroom above the highest point.
  s << "set key bottom right\nset yrange [0:*]\nset offsets 0, 0, graph 0.12, 0\n";
  panel("throughput", "samples/s", rate);
  s << "unset multiplot\nset output\n";
  return s.str();
}

// Runs the script; Error with gnuplot's words when it fails or draws nothing.
void draw(const std::string& script, const std::string& out, const fs::path& tmp) {
  const fs::path file = tmp / "plot.gp";
  std::ofstream(file) << script;
  // The output's folder is created; a place that cannot be written is the user's to fix.
  std::error_code ec;
  if (fs::path(out).has_parent_path()) fs::create_directories(fs::path(out).parent_path(), ec);
  {
    std::ofstream probe(out, std::ios::app);
    if (!probe) throw ConfigError(concat("forge plot cannot write '", out, "': ", std::strerror(errno)));
  }
  const fs::path errors = tmp / "gnuplot.err";
  int rc = runGnuplot(file, errors);
  std::ifstream errIn(errors);
  std::string errText((std::istreambuf_iterator<char>(errIn)), std::istreambuf_iterator<char>());
  if (rc == 127) {
    throw Error("forge plot draws with gnuplot, which is not installed (Debian: apt-get install gnuplot-nox)");
  }
  if (rc != 0) throw Error(concat("gnuplot failed (exit ", rc, ") drawing ", out, ":\n", errText));
  if (!fs::exists(out) || fs::file_size(out) == 0) {
    throw Error(concat("gnuplot wrote no image to ", out, errText.empty() ? "" : ":\n" + errText));
  }
}

}  // namespace

void plotRuns(const PlotOptions& o) {
  FORGE_CHECK_T(ConfigError, !o.runDirs.empty(), "forge plot needs at least one RUN_DIR");
  TempDir tmp;
  double lastEpoch = 1;
  std::vector<PlotRun> runs;
  for (const auto& runDir : o.runDirs) {
    if (auto run = writeRunData(runDir, runs.size(), tmp.path, o.runDirs.size() == 1, lastEpoch)) {
      runs.push_back(std::move(*run));
    }
  }
  if (runs.empty()) throw ConfigError("none of the run dirs holds an epoch record yet: nothing to draw");
  // Two runs of the same name (a/run, b/run) are told apart by their full paths.
  for (size_t i = 0; i < runs.size(); ++i) {
    for (size_t j = i + 1; j < runs.size(); ++j) {
      if (runs[i].name == runs[j].name) {
        runs[i].name = runs[i].dir;
        runs[j].name = runs[j].dir;
      }
    }
  }
  draw(plotScript(o, runs, lastEpoch), o.out, tmp.path);
}

}  // namespace forge::train
