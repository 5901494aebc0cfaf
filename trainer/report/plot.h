// `forge plot`: training curves of one or more runs as a PNG, drawn by gnuplot (pngcairo)
// from each run's metrics.csv: loss and accuracy (train solid, eval dashed), learning rate
// and throughput, per epoch, one colour per run.
#pragma once

#include <string>
#include <vector>

namespace forge::train {

struct PlotOptions {
  std::vector<std::string> runDirs;
  std::string out;      // the PNG to write
  int width = 1600;     // pixels
  int height = 1000;
  std::string title;    // "" = the run names
};

// Throws ConfigError for a run dir without metrics, Error when gnuplot is missing or fails
// (with its message).
void plotRuns(const PlotOptions& o);

// A run's metrics.csv rows, by column name; "" where the cell is empty.
struct MetricsTable {
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
  int column(const std::string& name) const;  // -1 when absent
};
MetricsTable readMetricsCsv(const std::string& path);

}  // namespace forge::train
