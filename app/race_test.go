//go:build race

package app_test

// raceEnabled reports whether the race detector instruments this build.
const raceEnabled = true
