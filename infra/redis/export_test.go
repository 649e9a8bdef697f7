package redis

import "time"

// Test hooks.

// StopRenewing makes f's later leases behave like those of a process killed
// with SIGKILL: never renewed (and, in the test, never released).
func StopRenewing(f *InFlight) { f.noRenew = true }

// SetCooldown shortens how long f skips Redis after a failure.
func SetCooldown(f *InFlight, d time.Duration) { f.cooldown = d }

// SetWriteDelay sets how long f's upkeep waits before it writes new leases
// and removes released ones.
func SetWriteDelay(f *InFlight, d time.Duration) { f.delay = d }

// StopRenewingLock makes w's later locks behave like those of a worker that
// died: never renewed.
func StopRenewingLock(w *WorkerLock) { w.noRenew = true }

// LockToken is the token w's locks carry.
func LockToken(w *WorkerLock) string { return w.token }
