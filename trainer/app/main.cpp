// The `forge` executable: forge's command line with forge's own parts.
#include "trainer/app/cli.h"

int main(int argc, char** argv) { return forge::runMain(argc, argv); }
