// Preemption signals: SIGUSR1 (what mpirun forwards to every rank, and what Slurm's
// --signal sends), SIGTERM (Slurm's preemption and time limit) and SIGINT (Ctrl-C; a second
// one quits at once, exit 130) only set a flag here.
// The trainer samples it at step boundaries and the ranks agree on it with a collective,
// since a signal reaches the ranks at different moments; then rank 0 saves and every rank
// exits with kExitRequeue.
#pragma once

namespace forge::train {

// Idempotent; call once per process before training.
void installPreemptionHandlers();
bool preemptionRequested();
// The signal that set the flag (0 when none).
int preemptionSignal();

}  // namespace forge::train
