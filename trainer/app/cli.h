// forge's command line as a library call, so that a program of a user's own can register
// its parts and then be forge:
//
//   int main(int argc, char** argv) {
//     forge::registerModel(myModel());
//     return forge::runMain(argc, argv);   // train / eval / ckpt / model / config / data / plot
//   }
#pragma once

namespace forge {

// Runs the command in argv[1..] and returns the process exit code: 0 done, 1 internal
// error, 2 bad config / data / usage, 3 communication failure or timeout, 4 checkpoint
// error, 75 preempted (saved; requeue and resume with --resume auto). Errors are printed,
// once, with the rank under a launcher; nothing is thrown.
int runMain(int argc, char** argv);

}  // namespace forge
