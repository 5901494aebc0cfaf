"""The README's config table is what `forge config keys --markdown` prints from the keys'
declarations, and every command `forge --help` lists has a line in the README's command
list: documentation that cannot drift from the code."""
import re

from harness import Harness

h = Harness()
readme = open(f"{h.repo}/README.md").read()
m = re.search(r"<!-- config keys: begin -->\n(.*?)<!-- config keys: end -->", readme, re.S)
h.check(m is not None, "the README has the config key table between its markers")
table = h.run(["config", "keys", "--markdown"]).stdout
if m:
    h.check(m.group(1) == table, "the README's table equals `forge config keys --markdown` "
            "(regenerate it: build/forge config keys --markdown)",
            "\n".join(l for l in set(m.group(1).splitlines()) ^ set(table.splitlines())))
for key in ["optimizer.lr", "model.hidden", "optimizer.momentum", "schedule.min_lr", "task.metrics", "data.path"]:
    h.check(f"| `{key}` |" in table, f"the table lists {key}", table)
plain = h.run(["config", "keys"]).stdout
h.check("optimizer.betas" in plain and "adamw" in plain, "the terminal table names each part's keys", plain)

help_text = h.run(["--help"]).stdout
commands = re.findall(r"^  (\w+) ", help_text, re.M)
h.check(len(commands) >= 7, "forge --help lists the commands", help_text)
for c in commands:
    h.check(f"forge {c} " in readme, f"the README's command list has `forge {c}`")
    p = h.run([c, "--help"])
    h.check("usage" in p.stdout, f"forge {c} --help prints its usage", p.stdout)
h.finish()
