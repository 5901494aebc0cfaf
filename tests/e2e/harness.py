"""Shared helpers for forge's end-to-end tests: they run the real `forge` binary (alone
and under mpirun) on real files in a scratch folder, and check what a user would see."""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap


class Harness:
    def __init__(self):
        p = argparse.ArgumentParser()
        p.add_argument("--forge", required=True)
        p.add_argument("--mpirun", default="mpirun")
        p.add_argument("--repo", required=True)
        p.add_argument("--workdir", required=True)
        a = p.parse_args()
        self.forge, self.mpirun, self.repo, self.work = a.forge, a.mpirun, a.repo, a.workdir
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.failures = 0

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def command(self, args, ranks=0, mpirun_args=()):
        cmd = [self.forge] + args
        if ranks:
            cmd = [self.mpirun, "-np", str(ranks), "--oversubscribe", *mpirun_args] + cmd
        return cmd

    @staticmethod
    def env(**extra):
        """The environment for a forge process. Where forge's libraries are not the system's
        (scripts/gpu-deps.sh: FORGE_DEPS_LIBRARY_PATH), they go back on the library path that
        this Python runs without."""
        env = {**os.environ, **extra}
        deps = env.get("FORGE_DEPS_LIBRARY_PATH")
        if deps:
            env["LD_LIBRARY_PATH"] = deps + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        return env

    def run(self, args, ranks=0, timeout=300, expect_rc=0, mpirun_args=()):
        """Runs forge with `args`; under `mpirun -np ranks` when ranks > 0."""
        cmd = self.command(args, ranks, mpirun_args)
        proc = subprocess.run(cmd, cwd=self.work, capture_output=True, text=True, timeout=timeout, env=self.env())
        shown = " ".join(cmd[-len(args) - 1:]) if not ranks else " ".join(cmd)
        print(f"$ {shown}  -> exit {proc.returncode}")
        if expect_rc is not None and proc.returncode != expect_rc:
            print(textwrap.indent(proc.stdout[-4000:] + proc.stderr[-4000:], "    "))
            raise AssertionError(f"expected exit code {expect_rc}, got {proc.returncode}")
        return proc

    def write(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(textwrap.dedent(text))
        return self.path(name)

    def check(self, cond, what, detail=""):
        if cond:
            print(f"  ok: {what}")
        else:
            self.failures += 1
            print(f"  FAIL: {what}")
            if detail:
                print(textwrap.indent(str(detail)[-3000:], "    "))

    def finish(self):
        if self.failures:
            print(f"{self.failures} check(s) failed")
            sys.exit(1)
        print("all checks passed")


def small_config(h, name, data, run_dir, epochs=2, features=16, classes=4, extra="", timeout_s=60):
    """A small MLP config over a synthetic file."""
    return h.write(name, textwrap.dedent(f"""\
        run:
          dir: {run_dir}
          seed: 5
          epochs: {epochs}
        model:
          name: mlp
          in_features: {features}
          hidden: 32
          num_classes: {classes}
          dropout: 0.1
        data:
          path: {data}
          batch_size: 32
          eval_batch_size: 100
        optimizer:
          name: sgd
          lr: 0.05
          momentum: 0.9
        checkpoint:
          every_epochs: 1
          keep_last: 5
        distributed:
          timeout_s: {timeout_s}
        """) + textwrap.dedent(extra))


def forge_processes(tag):
    """The pids of `forge train` processes whose command line holds `tag` (a run.dir=...)."""
    out = subprocess.run(["pgrep", "-f", f"^[^ ]*forge train .*{tag}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def final_accuracy(stdout):
    m = re.search(r"final test accuracy ([0-9.]+)%", stdout)
    return float(m.group(1)) if m else None


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def epoch_records(path):
    """The "epoch" records of a metrics.jsonl (it also holds "step" records)."""
    return [r for r in read_jsonl(path) if r["type"] == "epoch"]


def final_checkpoint(h, run_dir):
    """The newest step/epoch checkpoint of a run dir (None when there is none)."""
    import glob
    files = sorted(glob.glob(h.path(run_dir, "checkpoints", "ckpt-*.pt")))
    return files[-1] if files else None


def same_checkpoint(a, b):
    """(True, "") when two forge checkpoints hold the same position and, bit for bit, the same
    parameters, buffers, optimizer state, generator states and stateful parts' state (EMA
    weights, the gradient guard's counters, ...); else (False, what differs)."""
    import torch
    ca, cb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for key in ("epoch", "step", "global_step"):
        if ca[key] != cb[key]:
            return False, f"{key} {ca[key]} vs {cb[key]}"
    ma, mb = ca["model_state_dict"], cb["model_state_dict"]
    if ma.keys() != mb.keys():
        return False, "model keys"
    for k in ma:
        if not torch.equal(ma[k], mb[k]):
            return False, f"model tensor {k}"
    sa, sb = ca["optimizer_state_dict"]["state"], cb["optimizer_state_dict"]["state"]
    if sa.keys() != sb.keys():
        return False, "optimizer state keys"
    for i in sa:
        for k, v in sa[i].items():
            if torch.is_tensor(v) and not torch.equal(v, sb[i][k]):
                return False, f"optimizer state {i}.{k}"
    if len(ca["rng_states"]) != len(cb["rng_states"]) or not all(
            torch.equal(x, y) for x, y in zip(ca["rng_states"], cb["rng_states"])):
        return False, "generator states"
    # The stateful parts' fields (grad_guard, ema_state_dict, ...): every one, every value.
    if set(ca) - KNOWN_FIELDS != set(cb) - KNOWN_FIELDS:
        return False, f"part fields {sorted(set(ca) - KNOWN_FIELDS)} vs {sorted(set(cb) - KNOWN_FIELDS)}"
    for key in set(ca) - KNOWN_FIELDS:
        ok, where = _same_value(ca[key], cb[key])
        if not ok:
            return False, f"{key}{where}"
    return True, ""


# A checkpoint's fields besides its stateful parts' (checkpoint/fields.h).
KNOWN_FIELDS = {"model_state_dict", "optimizer_state_dict", "epoch", "step", "global_step", "epoch_samples",
                "best_metric", "best_metric_name", "world_size", "config", "forge_version", "rng_states",
                "lr_schedule", "sampler", "checksum"}


def _same_value(a, b):
    """(True, "") when two values read from checkpoints are equal: tensors bit for bit, dicts
    and lists element by element; else (False, where they differ)."""
    import torch
    if torch.is_tensor(a) or torch.is_tensor(b):
        return (torch.is_tensor(a) and torch.is_tensor(b) and torch.equal(a, b)), ""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return False, " keys"
        for k in a:
            ok, where = _same_value(a[k], b[k])
            if not ok:
                return False, f".{k}{where}"
        return True, ""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return False, " length"
        for i, (x, y) in enumerate(zip(a, b)):
            ok, where = _same_value(x, y)
            if not ok:
                return False, f"[{i}]{where}"
        return True, ""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True, ""  # NaN ("none yet") in both
    return a == b, f" {a!r} vs {b!r}"
