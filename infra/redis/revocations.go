package redis

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// KeyRevocations tells every replica at once that an API key was revoked,
// over Redis pub/sub, so that none keeps accepting it from its cache until
// the cache entry expires. A replica cut off from Redis misses what is sent
// meanwhile: [KeyRevocations.ListeningSince] says when that may be the case, so
// that the replica checks keys against the store instead of its cache.
// It satisfies app.KeyRevocations.
type KeyRevocations struct {
	client  *goredis.Client
	channel string
	heard   atomic.Int64 // unix nanoseconds of the subscription's last sign of life
	since   atomic.Int64 // ... and of the start of its signs of life without a break
}

// listenCheck is how often a quiet subscription is pinged; one that has not
// answered for two of these is taken for lost, and a silence of more than
// one and a half of them (a ping's answer being late) was a break.
const listenCheck = 2 * time.Second

// NewKeyRevocations returns revocations on a channel named after prefix
// (empty means [DefaultPrefix]).
func NewKeyRevocations(client *goredis.Client, prefix string) *KeyRevocations {
	return &KeyRevocations{client: client, channel: orDefault(prefix) + "keys:revoked"}
}

// Revoked announces that the key with ID keyID was revoked.
func (k *KeyRevocations) Revoked(ctx context.Context, keyID int64) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	return translate("announce revoked key", k.client.Publish(ctx, k.channel, strconv.FormatInt(keyID, 10)).Err())
}

// ListeningSince reports whether Listen's subscription answered lately, so
// that a revocation sent now would be heard, and since when it has without
// a break: one sent before then may have been missed. ok is false before
// Listen starts, while Redis is down, and while it hangs.
func (k *KeyRevocations) ListeningSince() (since time.Time, ok bool) {
	if time.Since(time.Unix(0, k.heard.Load())) >= 2*listenCheck {
		return time.Time{}, false
	}
	return time.Unix(0, k.since.Load()), true
}

// Listen calls forget with the ID of every key revoked anywhere, until ctx
// ends. The subscription survives Redis restarts (go-redis subscribes
// again), though revocations sent meanwhile are lost; a quiet one is
// pinged, so that ListeningSince notices a Redis that hangs.
func (k *KeyRevocations) Listen(ctx context.Context, forget func(keyID int64)) {
	sub := k.client.Subscribe(ctx, k.channel)
	defer sub.Close()
	for ctx.Err() == nil {
		msg, err := sub.ReceiveTimeout(ctx, listenCheck)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var nerr net.Error
			if errors.As(err, &nerr) && nerr.Timeout() {
				_ = sub.Ping(ctx) // the pong, or its absence, tells
				continue
			}
			// Lost: go-redis reconnects and subscribes again on the next
			// receive; do not spin while Redis refuses.
			select {
			case <-ctx.Done():
			case <-time.After(listenCheck / 4):
			}
			continue
		}
		now := time.Now().UnixNano()
		last := k.heard.Swap(now)
		if _, subscribed := msg.(*goredis.Subscription); subscribed || time.Duration(now-last) > listenCheck*3/2 {
			k.since.Store(now) // (re)subscribed, or back from a silence
		}
		if m, ok := msg.(*goredis.Message); ok {
			if id, err := strconv.ParseInt(m.Payload, 10, 64); err == nil {
				forget(id)
			}
		}
	}
}
