"""Fuzzes the config loader: seeded mutations of a good config (nasty values for every
declared key, broken structure, flipped and cut bytes), each given to the real binary.
No input may end in exit 1 (a bug), a signal or a stack dump; every refusal is exit 2
with a message that names the file or the key; and a config that trains must end with a
finite loss or stop with exit 5 (diverged). FORGE_FUZZ_CASES / FORGE_FUZZ_SEED vary it."""
import os
import random
import re
import subprocess
import time

from harness import Harness, small_config

h = Harness()
SEED = int(os.environ.get("FORGE_FUZZ_SEED", "20261130"))
CASES = int(os.environ.get("FORGE_FUZZ_CASES", "100"))
TRAINS = int(os.environ.get("FORGE_FUZZ_TRAINS", "6"))
rng = random.Random(SEED)

h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "240", "--features", "16", "--classes", "4"])
good = open(small_config(h, "good.yaml", "syn.h5", "run", epochs=1)).read()
keys = [m.group(1) for m in re.finditer(r"^\| `([a-z_.]+)` \|", h.run(["config", "keys", "--markdown"]).stdout, re.M)]
h.check(len(keys) > 40, f"the fuzzer knows {len(keys)} keys")

NASTY = ["1e300", "-1e300", "1e-300", "-1e-300", ".nan", ".inf", "-.inf", "0", "-1", "1", "2", "0.5",
         str(2**63 - 1), str(-2**63), str(2**64), "99999999999999999999999", "1e11", "100000000000",
         '""', "~", "[]", "{}", "[1, [2]]", "{a: 1}", "[.nan]", "[1e300, 2]", "!!binary AAAA", "&a 1",
         "'\\0'", "\"\\x00\"", "ü", "yes", "no", "null", "0x7fffffffffffffff", "1_000", "'1e400'", "-0",
         "[0.1]*784", "? [a]", "'mlp'", "sgd", "cosine", "bar", "auto", "cuda", "bf16", "nccl", "/dev/zero",
         "syn.h5", "'" + "x" * 5000 + "'", "[" * 60 + "]" * 60, "{a: {b: {c: 1}}}", "*missing", "%TAG", "@x", "`x"]


def set_key(text, dotted, value):
    """The config text with `dotted` set to `value` (section appended when absent)."""
    parts = dotted.split(".")
    section, key = parts[0], parts[-1]
    indent = "  " * (len(parts) - 1)
    block = "".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parts[1:-1], 1))
    line = f"{indent}{key}: {value}\n"
    m = re.search(rf"^{section}:\n", text, re.M)
    if m and len(parts) == 2:
        own = re.compile(rf"^  {re.escape(key)}:.*\n", re.M)
        body_start = m.end()
        nxt = re.search(r"^\S", text[body_start:], re.M)
        body_end = body_start + (nxt.start() if nxt else len(text[body_start:]))
        body = text[body_start:body_end]
        body = own.sub(lambda _: line, body) if own.search(body) else body + line
        return text[:body_start] + body + text[body_end:]
    return text + f"{section}:\n" + block + line


def structural(text):
    lines = text.splitlines(keepends=True)
    kind = rng.randrange(8)
    i = rng.randrange(len(lines))
    if kind == 0:
        lines.insert(i, lines[i])  # a duplicate key or section
    elif kind == 1:
        del lines[i]
    elif kind == 2:
        lines[i] = " " * rng.randrange(1, 5) + lines[i]  # indentation
    elif kind == 3:
        lines.insert(i, rng.choice(["---\n", "...\n", "%YAML 1.2\n", "? [a, b]\n: 1\n", "- x\n", "\t\n", "&x\n"]))
    elif kind == 4:
        return text[:rng.randrange(len(text))]  # cut short
    else:
        data = bytearray(text.encode())
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    return "".join(lines)


def write_case(n, content):
    path = h.path(f"fuzz{n:03d}.yaml")
    with open(path, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode("utf-8", "surrogateescape"))
    return path


def bad_end(p):
    """Why this process's end is a bug ("" when it is not)."""
    err = p.stderr
    if p.returncode < 0:
        return f"killed by signal {-p.returncode}"
    if p.returncode not in (0, 2, 5):
        return f"exit {p.returncode}"
    if "terminate called" in err or "frame #" in err or "Traceback" in err:
        return "a stack dump"
    if p.returncode == 2 and not err.strip():
        return "exit 2 without a message"
    return ""


start = time.time()
bugs, outcomes, trainable = [], {}, []
for n in range(CASES):
    if rng.random() < 0.7:
        text = good
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            text = set_key(text, rng.choice(keys), rng.choice(NASTY))
        content = text
    else:
        content = structural(good)
    path = write_case(n, content)
    p = subprocess.run([h.forge, "config", "check", path], cwd=h.work, capture_output=True, text=True,
                       errors="replace", timeout=60)
    outcomes[p.returncode] = outcomes.get(p.returncode, 0) + 1
    why = bad_end(p)
    if why:
        bugs.append(f"{os.path.basename(path)}: config check: {why}: {p.stderr[-600:]}")
    elif p.returncode == 0:
        trainable.append(path)
checks_s = time.time() - start
print(f"  {CASES} configs checked in {checks_s:.1f}s, exit codes {dict(sorted(outcomes.items()))}")

# The accepted ones that mutate something train for real (one epoch, lone process).
rng.shuffle(trainable)
trained = 0
for path in trainable[:TRAINS]:
    n = os.path.basename(path)
    try:
        p = subprocess.run([h.forge, "train", path, "--set", "run.epochs=1", "--set", f"run.dir=runs/{n}",
                            "--set", "log.progress=off", "--set", "data.path=syn.h5"],
                           cwd=h.work, capture_output=True, text=True, errors="replace", timeout=90)
    except subprocess.TimeoutExpired:
        bugs.append(f"{n}: train: ran past 90 s")
        continue
    trained += 1
    why = bad_end(p)
    if p.returncode == 0:
        m = re.search(r"final test accuracy [0-9.]+% \(loss ([^)]+)\)", p.stdout)
        if not m or not re.fullmatch(r"[0-9.e+-]+", m.group(1)):
            why = f"exit 0 with loss {m.group(1) if m else '(none reported)'}"
    if why:
        bugs.append(f"{n}: train: {why}: {p.stderr[-600:]}")
print(f"  {trained} accepted configs trained in {time.time() - start - checks_s:.1f}s")
h.check(not bugs, f"no input ends in exit 1, a signal, a stack dump or a non-finite result ({len(bugs)} did)",
        "\n".join(bugs[:10]))
h.finish()
