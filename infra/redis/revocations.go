package redis

import (
	"context"
	"strconv"

	goredis "github.com/redis/go-redis/v9"
)

// KeyRevocations tells every replica at once that an API key was revoked,
// over Redis pub/sub, so that none keeps accepting it from its cache until
// the cache entry expires. A replica that was cut off from Redis when a
// revocation went out misses it; its cache's TTL then bounds the delay.
// It satisfies app.KeyRevocations.
type KeyRevocations struct {
	client  *goredis.Client
	channel string
}

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

// Listen calls forget with the ID of every key revoked anywhere, until ctx
// ends. The subscription survives Redis restarts (go-redis subscribes
// again), though revocations sent meanwhile are lost.
func (k *KeyRevocations) Listen(ctx context.Context, forget func(keyID int64)) {
	sub := k.client.Subscribe(ctx, k.channel)
	defer sub.Close()
	msgs := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			if id, err := strconv.ParseInt(m.Payload, 10, 64); err == nil {
				forget(id)
			}
		}
	}
}
