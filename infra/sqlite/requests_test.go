package sqlite_test

import (
	"context"
	"testing"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/app/history/historytest"
	"github.com/aivonx/aivonx/infra/sqlite"
)

var _ app.RequestLog = (*sqlite.Store)(nil)

func TestStore_Requests(t *testing.T) {
	t.Parallel()
	historytest.Run(t, func(t *testing.T) historytest.Store {
		s, err := sqlite.Open(context.Background(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
