package sqlite_test

import (
	"context"
	"testing"

	"github.com/aivonx/aivonx/app/account/accounttest"
	"github.com/aivonx/aivonx/infra/sqlite"
)

func TestStore_Accounts(t *testing.T) {
	t.Parallel()
	accounttest.Run(t, func(t *testing.T) accounttest.Store {
		s, err := sqlite.Open(context.Background(), t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
