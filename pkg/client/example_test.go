package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// exampleDeployment starts a worker in its own namespace on the test
// servers and returns a connection and the client settings that reach it.
// A real program connects to its NATS and uses client.Config{} defaults.
func exampleDeployment() (*nats.Conn, *client.Config, func()) {
	env, err := loadtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	nc, err := nats.Connect(env.NATSURL)
	if err != nil {
		log.Fatal(err)
	}
	return nc, env.ClientConfig(), func() { nc.Close(); env.Close() }
}

// Charge an account once: a new key per intended payment.
func Example() {
	nc, cfg, stop := exampleDeployment()
	defer stop()
	c, err := client.New(nc, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := client.NewKey() // store it with the order before the first attempt
	res, err := c.Charge(ctx, key, messages.ChargeRequest{AccountID: "acct_42", Amount: 1999, Currency: "EUR"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Result.Status, res.Data.Amount, res.Data.Currency, "duplicate:", res.Duplicate)
	// Output: succeeded 1999 EUR duplicate: false
}

// A retry with the same key - after a timeout, a crash, a lost answer - is
// dropped by JetStream as a duplicate and returns the first attempt's
// outcome: one charge.
func ExampleClient_Charge_retry() {
	nc, cfg, stop := exampleDeployment()
	defer stop()
	c, err := client.New(nc, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := client.NewKey()
	req := messages.ChargeRequest{AccountID: "acct_42", Amount: 1999, Currency: "EUR", Description: "order 1001"}

	first, err := c.Charge(ctx, key, req)
	if err != nil {
		fmt.Println(err)
		return
	}
	retry, err := c.Charge(ctx, key, req) // the same key: safe to repeat
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("first:", first.Result.Status, "duplicate:", first.Duplicate)
	fmt.Println("retry:", retry.Result.Status, "duplicate:", retry.Duplicate)
	fmt.Println("same charge:", retry.Data.ChargeID == first.Data.ChargeID)

	// Reusing the key for a different payment is refused.
	_, err = c.Charge(ctx, key, messages.ChargeRequest{AccountID: "acct_42", Amount: 5000, Currency: "EUR"})
	fmt.Println("other amount, same key:", errors.Is(err, client.ErrKeyReused))
	// Output:
	// first: succeeded duplicate: false
	// retry: succeeded duplicate: true
	// same charge: true
	// other amount, same key: true
}
