package embedtest

import "syscall"

// Windows has no SIGSTOP: Pause and Resume do nothing there (the signal is
// refused).
const sigStop, sigCont = syscall.Signal(0x13), syscall.Signal(0x12)
