#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "checkpoint/atomic_file.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/torch_zip.h"
#include "checkpoint/zip_records.h"
#include "core/error.h"
#include "tests/temp_dir.h"

namespace forge::ckpt {
namespace {

namespace fs = std::filesystem;

class CheckpointTest : public ::testing::Test {
 protected:
  std::string path(const std::string& n) const { return dir_.file(n); }

  static Checkpoint sample(int64_t epoch) {
    Checkpoint ck;
    ck.modelState = {{"fc1.weight", torch::randn({4, 3})},
                     {"bn1.num_batches_tracked", torch::tensor(17, torch::kLong)},
                     {"bn1.running_var", torch::rand({4}, torch::kDouble)}};
    c10::impl::GenericDict opt(c10::StringType::get(), c10::AnyType::get());
    opt.insert("state", c10::impl::GenericDict(c10::IntType::get(), c10::AnyType::get()));
    ck.optimizerState = opt;
    ck.epoch = epoch;
    ck.step = 3;
    ck.globalStep = epoch * 100 + 3;
    ck.bestMetric = 0.875;
    ck.bestMetricName = "eval_accuracy";
    ck.worldSize = 2;
    ck.config = "run:\n  epochs: 3\n";
    ck.forgeVersion = "test";
    c10::impl::GenericDict schedule(c10::StringType::get(), c10::AnyType::get());
    schedule.insert("name", std::string("cosine"));
    schedule.insert("global_step", ck.globalStep);
    schedule.insert("lr", 0.0125);
    ck.schedule = schedule;
    c10::impl::GenericDict sampler(c10::StringType::get(), c10::AnyType::get());
    sampler.insert("seed", int64_t{42});
    sampler.insert("position", int64_t{192});
    sampler.insert("shuffle", true);
    ck.sampler = sampler;
    ck.bucketOrder = {3, 1, 2, 0};
    return ck;
  }

  std::string loadError(const std::string& p) {
    try {
      load(p);
    } catch (const CheckpointError& e) {
      return e.what();
    }
    return "";
  }

  testing::TempDir dir_{"ckpt_test"};
};

TEST_F(CheckpointTest, SaveThenLoadGivesIdenticalTensorsAndFields) {
  Checkpoint ck = sample(2);
  save(ck, path("a.pt"));
  Checkpoint back = load(path("a.pt"));
  ASSERT_EQ(back.modelState.size(), ck.modelState.size());
  for (size_t i = 0; i < ck.modelState.size(); ++i) {
    EXPECT_EQ(back.modelState[i].first, ck.modelState[i].first);
    EXPECT_EQ(back.modelState[i].second.scalar_type(), ck.modelState[i].second.scalar_type());
    EXPECT_TRUE(torch::equal(back.modelState[i].second, ck.modelState[i].second));
  }
  EXPECT_EQ(back.epoch, 2);
  EXPECT_EQ(back.step, 3);
  EXPECT_EQ(back.globalStep, 203);
  EXPECT_DOUBLE_EQ(back.bestMetric, 0.875);
  EXPECT_EQ(back.worldSize, 2);
  EXPECT_EQ(back.config, ck.config);
  ASSERT_TRUE(back.schedule.isGenericDict() && back.sampler.isGenericDict());
  EXPECT_EQ(back.schedule.toGenericDict().at("name").toStringRef(), "cosine");
  EXPECT_DOUBLE_EQ(back.schedule.toGenericDict().at("lr").toDouble(), 0.0125);
  EXPECT_EQ(back.sampler.toGenericDict().at("position").toInt(), 192);
  EXPECT_TRUE(back.sampler.toGenericDict().at("shuffle").toBool());
  EXPECT_EQ(back.bucketOrder, (std::vector<int64_t>{3, 1, 2, 0}));
  {
    // The bucket order is checksummed too.
    c10::IValue v = toIValue(sample(2));
    c10::impl::GenericList other(c10::AnyType::get());
    for (int64_t i : {0, 1, 2, 3}) other.push_back(i);
    v.toGenericDict().insert_or_assign("bucket_order", other);
    EXPECT_THROW(fromIValue(v, "tampered"), CheckpointError);
  }
  // The checksum covers them: a sampler position changed after the fact does not verify.
  {
    Checkpoint tampered = sample(2);
    c10::IValue v = toIValue(tampered);
    v.toGenericDict().at("sampler").toGenericDict().insert_or_assign("position", int64_t{193});
    EXPECT_THROW(fromIValue(v, "tampered"), CheckpointError);
  }
  // The atomic write leaves no temporary file behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_.path()), fs::directory_iterator{}), 1);
}

TEST_F(CheckpointTest, DamagedFilesAreErrorsNamingTheFile) {
  save(sample(1), path("good.pt"));
  auto bytes = readWholeFile(path("good.pt"));

  { std::ofstream(path("empty.pt")); }
  EXPECT_NE(loadError(path("empty.pt")).find("checkpoint '" + path("empty.pt") + "' is empty"), std::string::npos);

  std::vector<char> half(bytes.begin(), bytes.begin() + bytes.size() / 2);
  writeFileAtomically(path("truncated.pt"), half);
  std::string e = loadError(path("truncated.pt"));
  EXPECT_NE(e.find(path("truncated.pt")), std::string::npos) << e;

  // Flip one bit inside fc1.weight's stored bytes: the archive still parses, only the
  // checksum can see the damage.
  Checkpoint ck = load(path("good.pt"));
  const at::Tensor& w = ck.modelState[0].second;
  std::string raw(static_cast<const char*>(w.data_ptr()), w.nbytes());
  auto pos = std::string(bytes.begin(), bytes.end()).find(raw);
  ASSERT_NE(pos, std::string::npos);
  std::vector<char> flipped = bytes;
  flipped[pos + 5] ^= 0x10;
  writeFileAtomically(path("flipped.pt"), flipped);
  e = loadError(path("flipped.pt"));
  EXPECT_NE(e.find(path("flipped.pt")), std::string::npos) << e;
  EXPECT_NE(e.find("checksum"), std::string::npos) << e;

  { std::ofstream(path("foreign.pt")) << "PK this is not a checkpoint"; }
  EXPECT_NE(loadError(path("foreign.pt")).find(path("foreign.pt")), std::string::npos);
  EXPECT_NE(loadError(path("missing.pt")).find("cannot open checkpoint"), std::string::npos);
}

TEST_F(CheckpointTest, ADictWithoutForgeKeysIsNotAForgeCheckpoint) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("weights", torch::ones({2}));
  std::string e;
  try {
    fromIValue(d, "python.pt");
  } catch (const CheckpointError& err) {
    e = err.what();
  }
  EXPECT_NE(e.find("checkpoint 'python.pt' has no 'model_state_dict' entry"), std::string::npos) << e;
}

TEST_F(CheckpointTest, RetentionKeepsTheMostAdvancedAndResumeSkipsOnesThatDoNotVerify) {
  CheckpointDir d(path("run"), 2);
  for (int e = 1; e <= 4; ++e) d.save(sample(e));
  auto files = d.files();
  ASSERT_EQ(files.size(), 2u);
  // Named by progress: 4 epochs complete, 3 steps of 2 ranks x 192 samples into the next.
  EXPECT_EQ(fs::path(files[0]).filename(), "ckpt-e0004-n0000000384.pt");
  EXPECT_EQ(fs::path(files[1]).filename(), "ckpt-e0003-n0000000384.pt");

  auto found = d.loadNewest();
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->checkpoint.epoch, 4);
  EXPECT_TRUE(found->skipped.empty());

  // Corrupt the newest: resume falls back to the previous one, says why, and moves the bad
  // file aside.
  std::ofstream(files[0], std::ios::trunc) << "garbage";
  found = d.loadNewest();
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->checkpoint.epoch, 3);
  ASSERT_EQ(found->skipped.size(), 1u);
  EXPECT_NE(found->skipped[0].find(files[0]), std::string::npos);
  EXPECT_TRUE(fs::exists(path("run/unverified/ckpt-e0004-n0000000384.pt")));

  // A save killed midway leaves only its temporary file, which the next run removes.
  { std::ofstream(path("run/.ckpt-e0005-n0000000384.pt.tmp.4242")) << "half a checkpoint"; }
  EXPECT_EQ(d.removeStaleTemporaries(), 1);
  EXPECT_FALSE(fs::exists(path("run/.ckpt-e0005-n0000000384.pt.tmp.4242")));
  EXPECT_EQ(d.files().size(), 1u);

  CheckpointDir empty(path("none"), 2);
  EXPECT_FALSE(empty.loadNewest().has_value());
}

// keep_last counts checkpoints that verify: an empty or damaged file named like a more
// advanced checkpoint pushes no valid one out; it is moved aside, never deleted.
TEST_F(CheckpointTest, RetentionCountsOnlyCheckpointsThatVerify) {
  CheckpointDir d(path("run"), 2);
  d.save(sample(1));
  { std::ofstream(path("run/ckpt-e0009-n0000000000.pt")); }                       // empty
  { std::ofstream(path("run/ckpt-e0008-n0000000000.pt")) << "PK not really"; }    // foreign
  d.save(sample(2));
  std::vector<std::string> names;
  for (const auto& f : d.files()) names.push_back(fs::path(f).filename().string());
  EXPECT_EQ(names, (std::vector<std::string>{"ckpt-e0002-n0000000384.pt", "ckpt-e0001-n0000000384.pt"}))
      << "both valid checkpoints are kept";
  EXPECT_TRUE(fs::exists(path("run/unverified/ckpt-e0009-n0000000000.pt")));
  EXPECT_TRUE(fs::exists(path("run/unverified/ckpt-e0008-n0000000000.pt")));
  auto ok = d.verified();
  ASSERT_EQ(ok.size(), 2u);
  EXPECT_EQ(ok[0].progress, (Progress{2, 384}));
  // A third save deletes the least advanced valid one, and only it.
  d.save(sample(3));
  names.clear();
  for (const auto& f : d.files()) names.push_back(fs::path(f).filename().string());
  EXPECT_EQ(names, (std::vector<std::string>{"ckpt-e0003-n0000000384.pt", "ckpt-e0002-n0000000384.pt"}));
  EXPECT_TRUE(fs::exists(path("run/unverified/ckpt-e0009-n0000000000.pt")));
}

// After a change of world size global steps count differently; the newest checkpoint is the
// one furthest in training, whatever wrote it, and files named by global step by earlier
// versions are ordered by what they hold.
TEST_F(CheckpointTest, TheNewestIsTheMostAdvancedWhateverTheWorldSizeOrName) {
  CheckpointDir d(path("run"), 0);
  Checkpoint two = sample(2);  // 2 ranks, 37% into epoch 3 of 4000 samples: 1472 samples
  two.step = 23;
  two.globalStep = 2 * 63 + 23;
  two.epochSamples = 23 * 2 * 32;
  Checkpoint three = sample(2);  // resumed on 3 ranks, 94% in: fewer global steps
  three.worldSize = 3;
  three.step = 39;
  three.globalStep = 2 * 42 + 39;
  three.epochSamples = 39 * 3 * 32;
  d.save(two);
  d.save(three);
  auto found = d.loadNewest();
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->checkpoint.worldSize, 3);
  EXPECT_EQ(fs::path(found->path).filename(), "ckpt-e0002-n0000003744.pt");

  // A file of an earlier version: named by a larger global step, without epoch_samples. Its
  // progress comes from its sampler position (per rank) times its world size.
  Checkpoint old = sample(2);
  old.step = 60;
  old.globalStep = 2 * 63 + 60;
  c10::impl::GenericDict sampler(c10::StringType::get(), c10::AnyType::get());
  sampler.insert("position", int64_t{60 * 32});
  sampler.insert("world_size", int64_t{2});
  old.sampler = sampler;
  save(old, path("run/ckpt-e0002-s000000186.pt"));
  EXPECT_EQ(progressOf(load(path("run/ckpt-e0002-s000000186.pt")), "old"), (Progress{2, 3840}));
  found = d.loadNewest();
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(fs::path(found->path).filename(), "ckpt-e0002-s000000186.pt");
  old.sampler = c10::IValue();
  save(old, path("run/ckpt-e0002-s000000186.pt"));
  EXPECT_THROW(progressOf(load(path("run/ckpt-e0002-s000000186.pt")), "old"), CheckpointError)
      << "mid-epoch, without a sampler record, the progress cannot be told";
  auto ok = d.verified();
  ASSERT_EQ(ok.size(), 2u) << "the file whose progress cannot be told is moved aside";
  EXPECT_EQ(fs::path(ok[0].path).filename(), "ckpt-e0002-n0000003744.pt");
  EXPECT_EQ(fs::path(ok[1].path).filename(), "ckpt-e0002-n0000001472.pt");
}

// Every entry carries its real CRC-32 (zip tools test it), and the pickle record's is
// checked on load: a changed byte there is the same "fails its checksum" as anywhere else.
TEST_F(CheckpointTest, EntriesCarryTheirCrc32AndADamagedPickleFailsTheChecksum) {
  save(sample(1), path("a.pt"));
  auto bytes = readWholeFile(path("a.pt"));
  // Central directory entries: signature PK\1\2, CRC-32 at offset 16, name length at 28.
  size_t entries = 0, zero = 0;
  for (size_t at = 0; at + 46 < bytes.size(); ++at) {
    if (std::memcmp(bytes.data() + at, "PK\x01\x02", 4) != 0) continue;
    uint32_t crc;
    std::memcpy(&crc, bytes.data() + at + 16, 4);
    ++entries;
    if (crc == 0) ++zero;
  }
  EXPECT_GE(entries, 5u);
  EXPECT_EQ(zero, 0u);
  std::vector<char> pkl = pickleRecord(bytes);
  auto pos = std::search(bytes.begin(), bytes.end(), pkl.begin(), pkl.end()) - bytes.begin();
  std::vector<char> flipped = bytes;
  flipped[pos + pkl.size() / 2] ^= 0x01;
  writeFileAtomically(path("b.pt"), flipped);
  EXPECT_NE(loadError(path("b.pt")).find("checkpoint '" + path("b.pt") + "' fails its checksum (the file is corrupt)"),
            std::string::npos)
      << loadError(path("b.pt"));
}

std::vector<std::string> namesIn(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file()) out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// A file's progress is its contents': a copy under a more advanced name, a second name for
// the same progress and a name whose numbers do not fit are never counted, never win a
// resume and push no valid file out; each goes to unverified/, saying why, and nothing throws.
TEST_F(CheckpointTest, ANameThatIsNotItsContentsIsNeverCounted) {
  CheckpointDir d(path("run"), 2);
  d.save(sample(1));
  d.save(sample(2));
  fs::copy_file(path("run/ckpt-e0001-n0000000384.pt"), path("run/ckpt-e0009-n0000000000.pt"));
  fs::copy_file(path("run/ckpt-e0002-n0000000384.pt"), path("run/ckpt-e2-n384.pt"));
  fs::copy_file(path("run/ckpt-e0002-n0000000384.pt"), path("run/ckpt-e99999999999999999999-n0.pt"));
  fs::copy_file(path("run/ckpt-e0001-n0000000384.pt"), path("run/ckpt-e0009-s000000903.pt"));  // earlier-style name
  auto found = d.loadNewest();
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(fs::path(found->path).filename(), "ckpt-e0002-n0000000384.pt");
  std::string skipped;
  for (const auto& s : found->skipped) skipped += s + "\n";
  EXPECT_NE(skipped.find("ckpt-e0009-n0000000000.pt' is named for 9 epoch(s) + 0 samples but holds 1 epoch(s) + "
                         "384 samples"),
            std::string::npos)
      << skipped;
  EXPECT_EQ(namesIn(path("run/unverified")),
            (std::vector<std::string>{"ckpt-e0009-n0000000000.pt", "ckpt-e0009-s000000903.pt", "ckpt-e2-n384.pt",
                                      "ckpt-e99999999999999999999-n0.pt"}));
  // Retention: the same kinds of file, arriving while the run goes on, are set aside by the
  // pass after the next save, and the two most advanced valid files stay.
  fs::copy_file(path("run/ckpt-e0001-n0000000384.pt"), path("run/ckpt-e0007-n0000000000.pt"));
  fs::copy_file(path("run/ckpt-e0001-n0000000384.pt"), path("run/ckpt-e88888888888888888888-n0.pt"));
  d.save(sample(3));
  EXPECT_EQ(namesIn(path("run")), (std::vector<std::string>{"ckpt-e0002-n0000000384.pt", "ckpt-e0003-n0000000384.pt",
                                                            "last.pt"}));
  EXPECT_TRUE(fs::exists(path("run/unverified/ckpt-e0007-n0000000000.pt")));
  EXPECT_TRUE(fs::exists(path("run/unverified/ckpt-e88888888888888888888-n0.pt")));
}

// The "known good" record of a file is its identity (device, inode, size, mtime, ctime): a
// file rewritten in place with its mtime set back is read again, found damaged and moved
// aside, and the valid file it would have pushed out stays.
TEST_F(CheckpointTest, RetentionRereadsAFileChangedBehindItsMtime) {
  CheckpointDir d(path("run"), 2);
  d.save(sample(1));
  d.save(sample(2));
  const std::string second = path("run/ckpt-e0002-n0000000384.pt");
  const auto mtime = fs::last_write_time(second);
  auto bytes = readWholeFile(second);
  bytes[bytes.size() / 3] ^= 0x04;
  {
    std::ofstream out(second, std::ios::binary | std::ios::in);  // in place: same inode, same size
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  fs::last_write_time(second, mtime);
  d.save(sample(3));
  EXPECT_EQ(namesIn(path("run")),
            (std::vector<std::string>{"ckpt-e0001-n0000000384.pt", "ckpt-e0003-n0000000384.pt", "last.pt"}))
      << "the damaged file is not counted, so the first one stays";
  // last.pt: a link to the newest save, by its name in the same folder.
  EXPECT_TRUE(fs::is_symlink(path("run/last.pt")));
  EXPECT_EQ(fs::read_symlink(path("run/last.pt")).string(), "ckpt-e0003-n0000000384.pt");
  EXPECT_EQ(progressOf(load(path("run/last.pt")), "last.pt"), (Progress{3, 384}));
  // top/: copies under their periodic names, outside retention and resume discovery.
  EXPECT_EQ(d.saveTop(sample(1)), path("run/top/ckpt-e0001-n0000000384.pt"));
  d.save(sample(4));
  EXPECT_TRUE(fs::exists(path("run/top/ckpt-e0001-n0000000384.pt"))) << "keep_last never deletes a top-k copy";
  d.removeTop("ckpt-e0001-n0000000384.pt");
  EXPECT_FALSE(fs::exists(path("run/top/ckpt-e0001-n0000000384.pt")));
  EXPECT_EQ(namesIn(path("run/unverified")), (std::vector<std::string>{"ckpt-e0002-n0000000384.pt"}))
      << "and the damaged one is moved aside, not deleted";
}

// Setting files aside never replaces a file already set aside.
TEST_F(CheckpointTest, FilesSetAsideNeverReplaceEachOther) {
  for (int i = 0; i < 3; ++i) {
    { std::ofstream(path("x.pt")) << "copy " << i; }
    moveWithoutReplacing(path("x.pt"), path("aside"));
  }
  EXPECT_EQ(namesIn(path("aside")), (std::vector<std::string>{"x.pt", "x.pt.1", "x.pt.2"}));
  std::ifstream first(path("aside/x.pt"));
  std::string text;
  std::getline(first, text);
  EXPECT_EQ(text, "copy 0");
  EXPECT_EQ(createNewFolder(path("abandoned")), path("abandoned"));
  EXPECT_EQ(createNewFolder(path("abandoned")), path("abandoned.2"));
}

// Where each byte of an archive lies: central directory entries (from their fields), whose
// "version made by" and attributes no reader uses; and the zip64 end record's versions.
std::vector<bool> unusedZipBytes(const std::vector<char>& bytes) {
  using namespace zip;
  const auto* u = reinterpret_cast<const unsigned char*>(bytes.data());
  std::vector<bool> unused(bytes.size(), false);
  size_t end = bytes.size() - kEndSize;
  size_t e64 = readLe64(u + end - kEnd64LocatorSize + 8);
  unused[e64 + 12] = unused[e64 + 13] = unused[e64 + 14] = unused[e64 + 15] = true;
  size_t at = readLe64(u + e64 + 48);
  for (uint64_t i = 0, n = readLe64(u + e64 + 32); i < n; ++i) {
    for (size_t k : {4, 5, 36, 37, 38, 39, 40, 41}) unused[at + k] = true;
    at += kCentralHeaderSize + readLe16(u + at + 28) + readLe16(u + at + 30) + readLe16(u + at + 32);
  }
  return unused;
}

// Every byte of a checkpoint, one bit flipped at a time: the zip's bookkeeping (end
// records, central directory, local headers, padding, data descriptors), the small records
// (version, byteorder) and the data. Each flip is the one corruption message, except in the
// few fields no reader uses, which change nothing that is read. Nothing else is thrown.
TEST_F(CheckpointTest, EveryDamagedByteIsTheOneCorruptionMessage) {
  save(sample(1), path("a.pt"));
  const auto bytes = readWholeFile(path("a.pt"));
  const auto unused = unusedZipBytes(bytes);
  const std::string want = corruptMessage("flipped");
  size_t accepted = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::vector<char> flipped = bytes;
    flipped[i] ^= static_cast<char>(1 << (i % 8));
    std::string error;
    try {
      decode(flipped, "flipped");
    } catch (const CheckpointError& e) {
      error = e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "byte " << i << ": not a CheckpointError: " << e.what();
      continue;
    }
    if (unused[i]) {
      EXPECT_EQ(error, "") << "byte " << i << " lies in a field no reader uses";
      ++accepted;
    } else {
      EXPECT_EQ(error, want) << "byte " << i << " of " << bytes.size();
    }
  }
  EXPECT_GT(accepted, 0u);
}

// A file that records no CRC-32s (written before forge did) still loads; its byteorder and
// version records are checked by what they say.
TEST_F(CheckpointTest, WithoutCrcsTheSmallRecordsAreCheckedByContent) {
  using namespace zip;
  save(sample(1), path("a.pt"));
  auto bytes = readWholeFile(path("a.pt"));
  auto* u = reinterpret_cast<unsigned char*>(bytes.data());
  // Zero every CRC-32 (central directory entries and data descriptors), noting where the
  // version and byteorder records' bytes are.
  std::map<std::string, size_t> dataAt;
  size_t end = bytes.size() - kEndSize;
  size_t e64 = readLe64(u + end - kEnd64LocatorSize + 8);
  size_t at = readLe64(u + e64 + 48);
  for (uint64_t i = 0, n = readLe64(u + e64 + 32); i < n; ++i) {
    const size_t local = readLe32(u + at + 42);
    const size_t data = local + kLocalHeaderSize + readLe16(u + local + 26) + readLe16(u + local + 28);
    const size_t descriptor = data + readLe32(u + at + 24);
    ASSERT_EQ(readLe32(u + descriptor), kDescriptor);
    writeLe32(bytes.data() + descriptor + 4, 0);
    writeLe32(bytes.data() + at + 16, 0);
    dataAt[std::string(bytes.data() + at + kCentralHeaderSize, readLe16(u + at + 28))] = data;
    at += kCentralHeaderSize + readLe16(u + at + 28) + readLe16(u + at + 30) + readLe16(u + at + 32);
  }
  EXPECT_EQ(decode(bytes, "legacy").epoch, 1);
  ASSERT_EQ(std::string(bytes.data() + dataAt.at("archive/byteorder"), 6), "little");
  ASSERT_EQ(std::string(bytes.data() + dataAt.at("archive/version"), 2), "3\n");
  // ",ittle" (what Python's torch.load refuses), and "3" -> ";" (not a number).
  for (auto [record, bit] : {std::pair<const char*, int>{"archive/byteorder", 0x40}, {"archive/version", 0x08}}) {
    std::vector<char> flipped = bytes;
    flipped[dataAt.at(record)] ^= static_cast<char>(bit);
    std::string error;
    try {
      decode(flipped, "legacy");
    } catch (const CheckpointError& e) {
      error = e.what();
    }
    EXPECT_EQ(error, corruptMessage("legacy")) << record;
  }
}

}  // namespace
}  // namespace forge::ckpt
