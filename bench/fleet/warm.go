package main

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/inuse-dev/inuse/internal/store"
)

// warmScripts loads the store's update script into every server's script
// cache before the agents write, by applying empty deltas to throwaway
// images spread over all slots, then deleting them. Without it, an agent
// whose pipeline got NOSCRIPT from a fresh server while another agent's
// EVAL loaded the script half way re-sends the whole pipeline with EVAL,
// and the images already written count their events twice (store.Apply).
func warmScripts(ctx context.Context, url string, c redis.UniversalClient) error {
	st, err := store.Open(url)
	if err != nil {
		return err
	}
	defer st.Close()
	deltas := map[string]*store.Delta{}
	for i := range 64 {
		deltas[fmt.Sprintf("sha256:%064x", i)] = store.NewDelta()
	}
	if _, err := st.Apply(ctx, deltas, time.Now(), store.DefaultLearning); err != nil {
		return fmt.Errorf("loading the update script: %w", err)
	}
	_, err = c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for d := range deltas {
			p.Del(ctx, store.Keys(d).Meta())
			p.ZRem(ctx, store.ImagesKey, d)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("deleting the warm-up images: %w", err)
	}
	return nil
}
