package processor

import "github.com/redis/go-redis/v9"

// DefaultMux returns a Mux with the contract's v1 operations: payment.charge
// through a SimProvider configured by sim, and cart.add.
func DefaultMux(rdb redis.UniversalClient, sim *SimConfig) (*Mux, error) {
	provider, err := NewSimProvider(rdb, sim)
	if err != nil {
		return nil, err
	}
	mux := NewMux()
	mux.Handle(ChargeHandler(provider))
	mux.Handle(CartAddHandler())
	return mux, nil
}
