// The process's host allocator, tuned for a training loop that frees and allocates the same
// activations every step.
#pragma once

namespace forge {

// glibc malloc by default hands the top of its heap back to the kernel once 128 KiB or
// more is free there, and maps blocks above its (adaptive) threshold afresh: a step that
// frees its activations and allocates them again next step then faults in thousands of
// pages each time (resnet on the CPU: 11-21k minor faults a step). This keeps freed memory
// in the process: no trimming, and blocks up to glibc's largest threshold (32 MiB) from the
// heap. Resident memory stays at the run's peak. Returns false (and changes nothing
// further) where the C library refuses a setting.
bool keepFreedMemory();

}  // namespace forge
