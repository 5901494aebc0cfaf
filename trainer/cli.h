// The `forge` command line: subcommands data / train / eval / ckpt, each with --help.
#pragma once

namespace forge::train {

// Runs the command; returns the process exit code. Throws forge::Error for user errors.
int runCli(int argc, char** argv);

}  // namespace forge::train
