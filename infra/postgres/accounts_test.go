package postgres_test

import (
	"testing"

	"github.com/aivonx/aivonx/app/account/accounttest"
)

func TestStore_Accounts(t *testing.T) {
	t.Parallel()
	accounttest.Run(t, func(t *testing.T) accounttest.Store { return newStore(t) })
}
