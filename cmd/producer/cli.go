package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// grammar is the producer's command line. Flag and variable names match the
// worker's where they mean the same thing.
type grammar struct {
	cli.Common
	Globals

	Charge chargeCmd `cmd:"" help:"Send one payment.charge and print its answer."`
	Refund refundCmd `cmd:"" help:"Send one payment.refund of an earlier charge and print its answer."`
	Cart   struct {
		Add cartAddCmd `cmd:"" help:"Send one cart.add and print its answer."`
	} `cmd:"" help:"Cart commands."`
	Status statusCmd `cmd:"" help:"Print the stored outcome of a key, without sending anything."`
	DLQ    dlqCmd    `cmd:"" name:"dlq" help:"The dead letters: list, show, replay or purge them, one key or in bulk with filters."`
	Key    keyCmd    `cmd:"" help:"One key as the workers hold it: its record, lock and history; evict its record."`
	Load   loadCmd   `cmd:"" help:"Send many commands with retries, and check that every key got one outcome."`
}

// Globals are the flags every command takes.
type Globals struct {
	cli.NATSFlags
	JSON           bool          `name:"json" help:"Print JSON instead of a table."`
	PublishTimeout time.Duration `name:"publish-timeout" env:"PUBLISH_TIMEOUT" default:"5s" help:"How long one publish attempt waits for JetStream's ack before it is repeated with the same key."`
	ResultTimeout  time.Duration `name:"result-timeout" env:"RESULT_TIMEOUT" default:"30s" help:"How long to wait for the answer once the command is accepted."`
	LogLevel       string        `name:"log-level" env:"LOG_LEVEL" default:"error" enum:"debug,info,warn,error" help:"Log level of the client's diagnostics on stderr (retries, ignored answers): debug, info, warn or error."`
	Tenant         string        `name:"tenant" env:"IDEMPAY_TENANT" placeholder:"TENANT_ID" help:"Send for this tenant of the HTTP gateway (contract v1.2): --key and status's <key> are then the tenant's own keys (1-255 visible ASCII characters, e.g. an order number), sent under the scoped key uuidv5(uuidv5(7fdf12f7-4367-4d36-9bfb-43870eb77919, tenant), key) with the headers Idempay-Tenant and Idempay-Client-Key, exactly as the gateway sends that tenant's requests. Empty (the default): keys are UUIDs, used as they are."`

	cli.TopologyFlags
}

// connect returns a client on a new NATS connection; close closes it.
func (g *Globals) connect(out *output) (c *client.Client, closeFn func(), err error) {
	nc, err := g.Connect("idempay-producer")
	if err != nil {
		return nil, nil, err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(g.LogLevel)) // kong checked the enum
	c, err = client.New(nc, &client.Config{
		Topology:       g.Topology(),
		PublishTimeout: g.PublishTimeout,
		ResultTimeout:  g.ResultTimeout,
		Tenant:         g.Tenant,
		Logger:         slog.New(slog.NewTextHandler(out.stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return c, nc.Close, nil
}

// keyFlag is the --key of charge and cart add.
type keyFlag struct {
	Key string `name:"key" help:"Idempotency key: a UUID in canonical form, or with --tenant the tenant's own key (1-255 visible ASCII characters). Omit it to generate one; pass the printed key to retry the same command safely."`
}

// validKey checks a key given on the command line: a canonical UUID, or
// with a tenant the tenant's own key. what names the flag or argument.
func validKey(key, tenant, what string) error {
	switch {
	case tenant == "" && !messages.ValidKey(key):
		return fmt.Errorf("%s: %q is not a UUID in canonical form (36 characters, lower-case hex, 8-4-4-4-12)", what, key)
	case tenant != "" && !client.ValidClientKey(key):
		return fmt.Errorf("%s: %q is not a tenant's key: 1-255 visible ASCII characters", what, key)
	}
	return nil
}

func (k *keyFlag) validate(tenant string) error {
	if k.Key == "" {
		return nil
	}
	return validKey(k.Key, tenant, "--key")
}

// checkWith checks a command's flags with the contract's rules, naming the
// flag, then --key.
func (k *keyFlag) checkWith(req messages.Command, flags map[string]string, tenant string) error {
	if err := flagError(req.Validate(), flags); err != nil {
		return err
	}
	return k.validate(tenant)
}

// key returns --key, or a new key announced on stderr, so that a command
// interrupted before its answer can be retried with the same key.
func (k *keyFlag) key(out *output, retry string) string {
	if k.Key != "" {
		return k.Key
	}
	key := client.NewKey()
	fmt.Fprintf(out.stderr, "producer: key %s (to retry this command safely: %s --key %s)\n", key, retry, key)
	return key
}

type chargeCmd struct {
	Account     string `name:"account" required:"" help:"Account id: 1-64 characters of [A-Za-z0-9_.-]."`
	Amount      int64  `name:"amount" required:"" help:"Amount in minor units (cents), 1 to 10^12."`
	Currency    string `name:"currency" required:"" help:"Three upper-case letters, e.g. EUR."`
	Description string `name:"description" help:"Optional, at most 255 characters."`
	keyFlag
}

func (c *chargeCmd) request() messages.ChargeRequest {
	return messages.ChargeRequest{AccountID: c.Account, Amount: c.Amount, Currency: c.Currency, Description: c.Description}
}

// check checks the flags with the contract's rules, naming the flag. It
// runs in Run, after kong has reported missing flags.
func (c *chargeCmd) check(tenant string) error { return c.checkWith(c.request(), chargeFlags, tenant) }

func (c *chargeCmd) Run(ctx context.Context, g *Globals, out *output) error {
	if err := c.check(g.Tenant); err != nil {
		return usageError("charge", err)
	}
	retry := fmt.Sprintf("producer charge --account %s --amount %d --currency %s", c.Account, c.Amount, c.Currency)
	if c.Description != "" {
		retry += fmt.Sprintf(" --description %q", c.Description)
	}
	return send(ctx, g, out, &c.keyFlag, retry, c.request(), (*client.Client).Charge)
}

type cartAddCmd struct {
	CartID   string `name:"cart" required:"" help:"Cart id: 1-64 characters of [A-Za-z0-9_.-]."`
	SKU      string `name:"sku" required:"" help:"SKU: 1-64 characters of [A-Za-z0-9_.-]."`
	Quantity int64  `name:"quantity" required:"" help:"Quantity to add, 1 to 1000."`
	keyFlag
}

func (c *cartAddCmd) request() messages.CartAddRequest {
	return messages.CartAddRequest{CartID: c.CartID, SKU: c.SKU, Quantity: c.Quantity}
}

// check checks the flags with the contract's rules, naming the flag.
func (c *cartAddCmd) check(tenant string) error { return c.checkWith(c.request(), cartFlags, tenant) }

func (c *cartAddCmd) Run(ctx context.Context, g *Globals, out *output) error {
	if err := c.check(g.Tenant); err != nil {
		return usageError("cart add", err)
	}
	retry := fmt.Sprintf("producer cart add --cart %s --sku %s --quantity %d", c.CartID, c.SKU, c.Quantity)
	return send(ctx, g, out, &c.keyFlag, retry, c.request(), (*client.Client).AddToCart)
}

type refundCmd struct {
	ChargeKey string `name:"charge-key" required:"" help:"The idempotency key of the payment.charge to refund."`
	Amount    int64  `name:"amount" required:"" help:"Amount to refund in minor units, 1 to 10^12, at most what is left of the charge."`
	Reason    string `name:"reason" help:"Optional, at most 255 characters."`
	keyFlag
}

func (c *refundCmd) request() messages.RefundRequest {
	return messages.RefundRequest{ChargeKey: c.ChargeKey, Amount: c.Amount, Reason: c.Reason}
}

// check checks the flags with the contract's rules, naming the flag.
//
// With a tenant, --charge-key is the tenant's own key of the charge, which
// the client scopes (client.ScopeCommand) before the contract's rules.
func (c *refundCmd) check(tenant string) error {
	req := c.request()
	if tenant != "" {
		if !client.ValidClientKey(req.ChargeKey) {
			return fmt.Errorf("--charge-key: %q is not a tenant's key: 1-255 visible ASCII characters", req.ChargeKey)
		}
		req.ChargeKey = client.ScopedKey(tenant, req.ChargeKey)
	}
	return c.checkWith(req, refundFlags, tenant)
}

func (c *refundCmd) Run(ctx context.Context, g *Globals, out *output) error {
	if err := c.check(g.Tenant); err != nil {
		return usageError("refund", err)
	}
	retry := fmt.Sprintf("producer refund --charge-key %s --amount %d", c.ChargeKey, c.Amount)
	if c.Reason != "" {
		retry += fmt.Sprintf(" --reason %q", c.Reason)
	}
	return send(ctx, g, out, &c.keyFlag, retry, c.request(), (*client.Client).Refund)
}

type statusCmd struct {
	Key string `arg:"" name:"key" help:"The idempotency key."`
}

// check checks the key's form.
func (c *statusCmd) check(tenant string) error { return validKey(c.Key, tenant, "<key>") }

func (c *statusCmd) Run(ctx context.Context, g *Globals, out *output) error {
	if err := c.check(g.Tenant); err != nil {
		return usageError("status", err)
	}
	cl, closeFn, err := g.connect(out)
	if err != nil {
		return err
	}
	defer closeFn()
	res, err := cl.Status(ctx, c.Key)
	if errors.Is(err, client.ErrNotFound) {
		return &answerError{code: exitNoAnswer, err: fmt.Errorf(
			"no stored outcome for %s: never sent, still in flight, rejected, dead-lettered, or expired", c.Key)}
	}
	if err != nil {
		return err
	}
	return out.answer(g.JSON, c.Key, &client.Reply{Result: *res, Source: client.SourceResultStream}, client.ResultError(res))
}

// send is what charge, cart add and refund share once their flags are
// checked: a connection, the key (--key, or a new one announced with retry,
// the command that sends it again), the send and its answer.
func send[Q, D any](ctx context.Context, g *Globals, out *output, k *keyFlag, retry string, req Q,
	do func(*client.Client, context.Context, string, Q) (*client.Result[D], error),
) error {
	cl, closeFn, err := g.connect(out)
	if err != nil {
		return err
	}
	defer closeFn()
	if g.Tenant != "" {
		retry = strings.Replace(retry, "producer ", "producer --tenant "+g.Tenant+" ", 1)
	}
	key := k.key(out, retry)
	res, err := do(cl, ctx, key, req)
	if res == nil {
		return noAnswer(key, err)
	}
	return out.answer(g.JSON, key, &res.Reply, err)
}

// noAnswer is the error of a send that got no answer: refused by the
// client (before publishing, or because the key holds another command's
// outcome), or with no outcome known.
func noAnswer(key string, err error) error {
	if _, ok := errors.AsType[*messages.RejectError](err); ok {
		return &answerError{code: exitRejected, err: fmt.Errorf("%w; key %s", err, key)}
	}
	return fmt.Errorf("%w; key %s", err, key)
}

// The flags that carry each JSON field, to name them in errors.
var (
	chargeFlags = map[string]string{"account_id": "--account", "amount": "--amount", "currency": "--currency", "description": "--description"}
	cartFlags   = map[string]string{"cart_id": "--cart", "sku": "--sku", "quantity": "--quantity"}
	refundFlags = map[string]string{"charge_key": "--charge-key", "amount": "--amount", "reason": "--reason"}
)

// flagError turns a validation error, which names a JSON field first, into
// one that names the flag.
func flagError(err error, flags map[string]string) error {
	var rej *messages.RejectError
	if !errors.As(err, &rej) {
		return err
	}
	field, rest, _ := strings.Cut(rej.Message, " ")
	if flag, ok := flags[field]; ok {
		return fmt.Errorf("%s: %s", flag, rest)
	}
	return errors.New(rej.Message)
}
