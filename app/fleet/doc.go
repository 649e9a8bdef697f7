// Package fleet is the shared vocabulary of Aivonx: the Ollama nodes an
// admin configured ([Node]), what the worker last observed about them
// ([Status]), and the pure routing policy that turns both into the
// candidates for one request ([Snapshot.Candidates], [Strategy.Narrow],
// [PickLeast]).
//
// It imports only the standard library, so the handler (package app), the
// worker and every storage adapter can share it without import cycles, and
// everything in it can be table-tested without a network.
package fleet
