package postgres_test

import (
	"testing"

	"github.com/aivonx/aivonx/app/history/historytest"
)

func TestStore_Requests(t *testing.T) {
	t.Parallel()
	historytest.Run(t, func(t *testing.T) historytest.Store { return newStore(t) })
}
