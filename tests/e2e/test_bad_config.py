"""A user's mistake in a config is exit 2 with the key (or file) named, on every rank, before
any training starts: values that would overflow, underflow or exhaust the node, YAML that
would be read differently than written, and files that are no config at all."""
import os

from harness import Harness, small_config

h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "300", "--features", "16", "--classes", "4"])
good = small_config(h, "good.yaml", "syn.h5", "run", epochs=1)


def expect_error(args, needle, ranks=2, rc=2, what=""):
    p = h.run(args, ranks=ranks, expect_rc=None)
    err = p.stderr
    h.check(p.returncode == rc, f"{what}: exit code {rc} (got {p.returncode})", err)
    h.check(needle in err, f"{what}: says \"{needle}\"", err)
    if ranks:
        for r in range(ranks):
            h.check(f"[rank {r}] " in err, f"{what}: rank {r} reports it", err)
    h.check("frame #" not in err and "terminate called" not in err and "enforce fail" not in err,
            f"{what}: no stack dump or LibTorch internals", err)
    h.check(not os.path.exists(h.path("run", "checkpoints")) or not os.listdir(h.path("run", "checkpoints")),
            f"{what}: nothing trained", err)


def setting(key, value, needle, what=None, ranks=2):
    expect_error(["train", good, "--set", f"{key}={value}"], needle, ranks=ranks, what=what or f"{key}={value}")


# Values beyond what the tensors or the conversions they reach can hold.
setting("optimizer.weight_decay", "1e300", "optimizer.weight_decay must be 0 or a finite number within float32's range")
setting("optimizer.lr", ".nan", "optimizer.lr must be 0 or a finite number")
setting("data.normalize.scale", "1e300", "data.normalize.scale must be 0 or a finite number within float32's range")
setting("data.normalize.mean", "[.inf]", "data.normalize.mean must be 0 or a finite number")
setting("distributed.bucket_cap_mb", "1e300", "distributed.bucket_cap_mb must be 0 or a finite number")
setting("distributed.bucket_cap_mb", ".inf", "distributed.bucket_cap_mb must be 0 or a finite number")
setting("distributed.bucket_cap_mb", "1e30", "distributed.bucket_cap_mb must be between 1 byte")
setting("distributed.first_bucket_cap_mb", "1e-9", "distributed.first_bucket_cap_mb must be between 1 byte")
setting("data.buffer_mb", "1e-12", "data.buffer_mb must be between 1 byte")
setting("run.threads", "100000", "run.threads must be at most this node's")
setting("distributed.timeout_s", "0.001", "distributed.timeout_s must be at least 1 second")
setting("log.every_s", "1e20", "log.every_s must be positive and at most 1e9")
setting("optimizer.lr", "1e-50", "optimizer.lr must be 0 or a finite number within float32's range",
        what="a value that float32 makes 0")
setting("optimizer.lr", "", "no value (write optimizer.lr=~ to drop the key", what="an empty --set value")
setting("model.hidden", str(2**62), "does not fit this node", what="a size whose byte count overflows")
# A finite file whose values the normalization overflows: the config is named, not the data.
p = h.run(["train", good, "--set", "data.normalize.scale=1e38", "--set", "run.dir=scaled"], ranks=2, expect_rc=2)
h.check("has finite values in the file but not after data.normalize" in p.stderr,
        "an overflowing data.normalize is named as such", p.stderr[-2000:])
# Models that cannot fit: the message says what they need and what the node has.
for key in ("model.hidden", "model.num_classes"):
    setting(key, "100000000000", "does not fit this node", what=f"{key}=1e11")
p = h.run(["train", good, "--set", "model.hidden=100000000000"], expect_rc=2)
h.check("GiB" in p.stderr and "memory available" in p.stderr and "hidden=100000000000" in p.stderr,
        "the model-size message names the value, the need and the node's memory", p.stderr)
p = h.run(["config", "check", good, "--set", "model.hidden=100000000000"], expect_rc=2)
h.check("does not fit this node" in p.stderr, "forge config check finds the same", p.stderr)
# Schedules that cannot train: more steps than count exactly, a rate that is 0 in float32.
setting("run.epochs", str(10**17), "is more than 2^53 optimizer steps")
expect_error(["train", good, "--set", "optimizer.lr=1.2e-38", "--set", "schedule.warmup_steps=1000000000"],
             "training would not move", what="a warmup whose learning rate is 0 in float32")

# --set values are the whole value, or an error.
setting("data.normalize.mean", "[0.1]*784", "config error in --set data.normalize.mean=[0.1]*784: value is not valid YAML")
setting("data.normalize.mean", "[0.1] 0.2", "the value is more than one YAML value")

# YAML read otherwise than written: duplicate keys, duplicate sections, a second document,
# a key that is a list.
text = open(good).read()
h.write("dupkey.yaml", text.replace("  lr: 0.05\n", "  lr: 0.05\n  lr: 5.0\n"))
expect_error(["train", "dupkey.yaml"], "'optimizer.lr' appears twice", what="a duplicate key")
h.write("dupsec.yaml", text + "optimizer:\n  lr: 5.0\n")
expect_error(["train", "dupsec.yaml"], "'optimizer' appears twice", what="a duplicate section")
h.write("twodocs.yaml", text + "---\nrun:\n  epochs: 9\n")
expect_error(["train", "twodocs.yaml"], "holds 2 YAML documents", what="a second YAML document")
h.write("complex.yaml", text.replace("run:\n", "run:\n  ? [a, b]\n  : 1\n"))
expect_error(["train", "complex.yaml"], "a key in 'run' is a list, not a name", what="a complex key")
h.write("toplist.yaml", "- 1\n- 2\n")
expect_error(["train", "toplist.yaml"], "the top level must be a map of sections", what="a config that is a list")

# Files that are no config at all: refused by kind and size, not read until memory runs out.
expect_error(["train", "/dev/zero"], "'/dev/zero' is not a regular file", ranks=0, what="/dev/zero")
with open(h.path("huge.yaml"), "w") as f:
    f.write("# padding\n" * 200000)
expect_error(["train", "huge.yaml"], "is larger than 1 MiB", ranks=0, what="a 2 MB config")
with open(h.path("binary.yaml"), "wb") as f:
    f.write(bytes(range(256)) * 4)
expect_error(["train", "binary.yaml"], "holds NUL bytes", ranks=0, what="a binary file")

# A deadline of 1e10 s is no deadline (it used to time out every collective at once).
p = h.run(["train", good, "--set", "distributed.timeout_s=1e10", "--set", "run.dir=nodeadline"], ranks=2)
h.check("final test accuracy" in p.stdout, "distributed.timeout_s=1e10 trains (no deadline)", p.stdout[-2000:])

h.finish()
