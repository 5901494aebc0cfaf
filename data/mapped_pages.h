// Reading rows mapped from a data file (SplitSource::map) safely: a file cut short under
// its mapping makes a read of a page past its new end raise SIGBUS, which would kill the
// process without a word. Reads done through readMappedPages come back as `false` instead,
// so that the loader can report a DataError naming the file.
#pragma once

namespace forge::data {

// Installs, once per process, the SIGBUS handler behind readMappedPages. Outside such a
// read it says what a SIGBUS on a mapped page likely means, puts back the handler it
// replaced (the default, or Open MPI's backtrace printer) and returns: the access faults
// again and that handler ends the process, as it would have.
void installMappedPagesHandler();

// Runs fn(context) on the calling thread; false when a page it read from a mapped file was
// gone (SIGBUS: the file was cut short). fn is then left by a jump, not by a return: it must
// hold no object with a destructor, nor a lock, while it reads mapped pages. Costs no system
// call (for every batch); installMappedPagesHandler must have run.
bool readMappedPages(void (*fn)(void*), void* context);

template <typename Fn>
bool readMappedPages(Fn& fn) {
  return readMappedPages([](void* f) { (*static_cast<Fn*>(f))(); }, &fn);
}

}  // namespace forge::data
