// Small string helpers shared by the modules.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace forge {

// Levenshtein distance, for "did you mean" suggestions.
size_t editDistance(const std::string& a, const std::string& b);

// The candidate closest to `word`, or "" when none is close enough to be a plausible typo.
std::string nearest(const std::string& word, const std::vector<std::string>& candidates);

std::vector<std::string> split(const std::string& text, char sep);
// "a, b, c": the parts with `sep` between them.
std::string join(const std::vector<std::string>& parts, const std::string& sep = ", ");

// `v` with exactly `decimals` digits after the point ("%.*f").
std::string fixed(double v, int decimals);

// "1234567" -> "1,234,567"
std::string withThousands(long long value);

// Wall-clock seconds since the Unix epoch (metrics records, TensorBoard events).
double unixSeconds();

// Seconds as "1h02m03s" / "2m05s" / "4.2s".
std::string formatDuration(double seconds);

// "[1, 28, 28]": a shape for messages.
std::string dimsText(const std::vector<int64_t>& dims);

}  // namespace forge
