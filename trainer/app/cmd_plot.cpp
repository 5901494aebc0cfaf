// forge plot: training curves of one or more runs as a PNG.
#include <filesystem>
#include <iostream>

#include "core/error.h"
#include "core/strings.h"
#include "trainer/app/commands.h"
#include "trainer/report/plot.h"

namespace forge::train {
namespace {

const char* kPlotHelp = R"(usage: forge plot RUN_DIR... [--out FILE.png] [--title TEXT] [--size WxH]

Draws the curves of one run, or of several runs in one picture (one colour per run), from
each RUN_DIR/metrics.csv: loss and accuracy per epoch (train solid, eval dashed; the
training loss of the step records faint behind), learning rate and samples/s.
  --out FILE.png   default: RUN_DIR/curves.png for one run, ./curves.png for several
                   (its folder is created when missing)
  --title TEXT     default: the run names
  --size WxH       pixels, default 1600x1000
Needs gnuplot with the pngcairo terminal (Debian: gnuplot-nox).
)";

}  // namespace

int cmdPlot(int argc, char** argv) {
  Args a = parseArgs(argc, argv, 2, {"out", "title", "size"}, {}, kPlotHelp);
  if (a.help || a.positional.empty()) {
    std::cout << kPlotHelp;
    return a.help ? 0 : 2;
  }
  PlotOptions o;
  o.runDirs = a.positional;
  o.title = a.one("title");
  o.out = a.one("out", o.runDirs.size() == 1 ? (std::filesystem::path(o.runDirs[0]) / "curves.png").string()
                                              : std::string("curves.png"));
  if (a.has("size")) {
    auto wh = split(a.one("size"), 'x');
    if (wh.size() != 2) usage(concat("--size takes WxH in pixels, e.g. 1600x1000, got '", a.one("size"), "'"), kPlotHelp);
    o.width = static_cast<int>(parseInt(wh[0], "size"));
    o.height = static_cast<int>(parseInt(wh[1], "size"));
    if (o.width < 200 || o.height < 150 || o.width > 10000 || o.height > 10000) {
      usage("--size must be between 200x150 and 10000x10000 pixels", kPlotHelp);
    }
  }
  plotRuns(o);
  std::cout << "wrote " << o.out << " (" << o.width << "x" << o.height << ", " << o.runDirs.size() << " run(s))\n";
  return 0;
}

}  // namespace forge::train
