#include <gtest/gtest.h>

#include "core/error.h"
#include "core/strings.h"

namespace forge {
namespace {

TEST(Strings, EditDistanceCountsSingleCharacterEdits) {
  EXPECT_EQ(editDistance("optimizer", "optimiser"), 1u);
  EXPECT_EQ(editDistance("", "abc"), 3u);
  EXPECT_EQ(editDistance("epochs", "epochs"), 0u);
}

TEST(Strings, NearestSuggestsATypoButNotAnotherWord) {
  std::vector<std::string> keys = {"optimizer", "schedule", "checkpoint"};
  EXPECT_EQ(nearest("optimiser", keys), "optimizer");
  EXPECT_EQ(nearest("checkpiont", keys), "checkpoint");
  EXPECT_EQ(nearest("banana", keys), "");
}

TEST(Strings, ThousandsAndDurationsReadWell) {
  EXPECT_EQ(withThousands(204042), "204,042");
  EXPECT_EQ(withThousands(-1234567), "-1,234,567");
  EXPECT_EQ(withThousands(12), "12");
  EXPECT_EQ(formatDuration(4.3), "4.3s");
  EXPECT_EQ(formatDuration(125), "2m05s");
  EXPECT_EQ(formatDuration(3723), "1h02m03s");
}

TEST(Errors, CheckMacroNamesTheExpressionAndCarriesTheExitCode) {
  try {
    int batch = 0;
    FORGE_CHECK_T(ConfigError, batch > 0, "batch must be positive, got ", batch);
    FAIL() << "no throw";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("batch must be positive, got 0"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("batch > 0"), std::string::npos);
    EXPECT_EQ(e.exitCode(), 2);
  }
  EXPECT_EQ(CommTimeout("x").exitCode(), 3);
  EXPECT_EQ(CheckpointError("x").exitCode(), 4);
}

}  // namespace
}  // namespace forge
