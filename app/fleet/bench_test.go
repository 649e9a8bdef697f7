package fleet_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
)

// BenchmarkSelect measures what a request pays to choose a node: candidate
// lookup, strategy narrowing and the least-loaded pick.
func BenchmarkSelect(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			nodes := make([]fleet.Node, n)
			statuses := make([]fleet.Status, n)
			for i := range n {
				id := int64(i + 1)
				nodes[i] = node(id, true)
				// Every node has 20 models; "llama3" is on a tenth of them.
				st := healthy(id, time.Second, time.Duration(1+i%7)*time.Millisecond)
				for j := range 20 {
					st.Models = append(st.Models, model(fmt.Sprintf("model-%d", j)))
				}
				if i%10 == 0 {
					st.Models = append(st.Models, model("llama3:latest"))
				}
				statuses[i] = st
			}
			snap := fleet.NewSnapshot(nodes, statuses)
			routing := fleet.Routing{Now: now, MaxAge: 30 * time.Second, Excluded: func(int64, fleet.Status) bool { return false }}
			load := make(map[int64]int)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				cands, err := snap.Candidates("llama3", routing)
				if err != nil {
					b.Fatal(err)
				}
				cands, _ = fleet.LeastActive.Narrow(cands)
				i := fleet.PickLeast(len(cands), func(i int) int { return load[cands[i].Node.ID] }, rand.IntN)
				load[cands[i].Node.ID]++
			}
		})
	}
}
