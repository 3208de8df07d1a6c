package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idempay/idempay/pkg/messages"
)

// DeadLetter is one copy in the dead-letter stream: a command that used its
// tries, with why and what its client was told.
type DeadLetter struct {
	// Sequence is the copy's sequence in the dead-letter stream.
	Sequence uint64
	// Key, Kind and Body are the command's.
	Key  string
	Kind string
	Body []byte
	// Header is the command's headers, as copied, Dlq-* included.
	Header nats.Header
	// Reason is the last error; Deliveries the delivery count of its last
	// delivery; Effect "none" (its client was told dead_lettered) or
	// "unknown" (outcome_unknown).
	Reason     string
	Deliveries int
	Effect     string
	// Published is when the command was published (zero for copies made
	// before the header existed); DeadLettered when it was copied.
	Published    time.Time
	DeadLettered time.Time
}

// ErrDeadLetterNotFound: the dead-letter stream holds no copy of the key.
var ErrDeadLetterNotFound = errors.New("client: no dead letter of that key")

// DeadLetters returns every copy in the dead-letter stream, oldest first.
// It reads the stream through an ordered consumer, a batch per request: a
// tool for operators, not for a hot path. ScanDeadLetters bounds it.
func (c *Client) DeadLetters(ctx context.Context) ([]DeadLetter, error) {
	dls, _, err := c.ScanDeadLetters(ctx, 0)
	return dls, err
}

// scanBatch is how many dead letters one request of ScanDeadLetters reads.
const scanBatch = 500

// ScanDeadLetters returns the copies in the dead-letter stream, oldest
// first: with limit > 0 only those among its newest limit sequence
// numbers (older ones are not read: a stream that grew during an
// incident is read in bounded time), and how many messages the stream
// holds in all, so that a caller can say what it left out. Copies stored
// while it reads are left for the next scan.
func (c *Client) ScanDeadLetters(ctx context.Context, limit int) (dls []DeadLetter, total uint64, err error) {
	name := c.cfg.Topology.DeadLetterStream
	stream, err := c.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("client: look up stream %s: %w", name, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("client: stream %s: %w", name, err)
	}
	st := info.State
	if st.Msgs == 0 {
		return nil, 0, nil
	}
	start := st.FirstSeq
	if limit > 0 && st.LastSeq >= uint64(limit) && st.LastSeq-uint64(limit)+1 > start {
		start = st.LastSeq - uint64(limit) + 1
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start,
	})
	if err != nil {
		return nil, 0, fmt.Errorf("client: read stream %s: %w", name, err)
	}
	for {
		batch, err := cons.FetchNoWait(scanBatch)
		if err != nil {
			return nil, 0, fmt.Errorf("client: read stream %s: %w", name, err)
		}
		n, done := 0, false
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if md.Sequence.Stream > st.LastSeq {
				done = true // stored after the scan began
				continue
			}
			dls = append(dls, c.deadLetter(md.Sequence.Stream, m.Subject(), m.Headers(), m.Data(), md.Timestamp))
			if md.Sequence.Stream == st.LastSeq || md.NumPending == 0 {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, 0, fmt.Errorf("client: read stream %s: %w", name, err)
		}
		if done || n == 0 {
			return dls, st.Msgs, nil
		}
	}
}

// DeadLettersOf returns the copies of key, oldest first, or
// ErrDeadLetterNotFound.
func (c *Client) DeadLettersOf(ctx context.Context, key string) ([]DeadLetter, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	all, err := c.DeadLetters(ctx)
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	for _, dl := range all {
		if dl.Key == key {
			out = append(out, dl)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w %s in %s", ErrDeadLetterNotFound, key, c.cfg.Topology.DeadLetterStream)
	}
	return out, nil
}

func (c *Client) deadLetter(seq uint64, subject string, h nats.Header, body []byte, stored time.Time) DeadLetter {
	dl := DeadLetter{Sequence: seq, Body: body, Header: h, DeadLettered: stored}
	dl.Kind, _ = c.cfg.Topology.Subjects.KindOfDeadLetter(subject)
	if h != nil {
		dl.Key = h.Get(messages.HeaderDlqKey)
		if dl.Key == "" { // copies made before Dlq-Key kept the command's Nats-Msg-Id
			dl.Key = h.Get(messages.HeaderMsgID)
		}
		dl.Reason, dl.Effect = h.Get(messages.HeaderDlqReason), h.Get(messages.HeaderDlqEffect)
		dl.Deliveries, _ = strconv.Atoi(h.Get(messages.HeaderDlqDeliveries))
		dl.Published, _ = time.Parse(time.RFC3339Nano, h.Get(messages.HeaderDlqPublished))
	}
	return dl
}

// ErrInsideDedupeWindow: a re-drive now would be dropped by the command
// stream's duplicate window, which still remembers the key.
var ErrInsideDedupeWindow = errors.New("client: the key is still inside the command stream's duplicate window")

// Replay re-drives the newest dead letter of key: its body, under the same
// key, to cmd.<kind>, as a new command with fresh tries. It refuses, with an
// ErrInsideDedupeWindow that says when it will work, while the command
// stream's duplicate window still covers the original publish (JetStream
// would drop the re-drive). It returns the answer like Send.
func (c *Client) Replay(ctx context.Context, key string) (*Reply, error) {
	dls, err := c.DeadLettersOf(ctx, key)
	if err != nil {
		return nil, err
	}
	return c.ReplayDeadLetter(ctx, dls[len(dls)-1])
}

// ReplayDeadLetter re-drives dl, a copy read from the dead-letter stream,
// as Replay does the newest copy of a key: its body under its key, with
// the same refusal inside the duplicate window. Bulk tools call it with
// the copies they read once, rather than Replay, which reads the stream
// again for each key.
func (c *Client) ReplayDeadLetter(ctx context.Context, dl DeadLetter) (*Reply, error) {
	if err := checkKey(dl.Key); err != nil {
		return nil, err
	}
	if window, err := c.dedupeWindow(ctx); err == nil && !dl.Published.IsZero() {
		if until := dl.Published.Add(window); time.Now().Before(until) {
			return nil, fmt.Errorf("%w: it was published at %s and the window is %v; replay after %s (in %v)",
				ErrInsideDedupeWindow, dl.Published.Format(time.RFC3339), window, until.Format(time.RFC3339),
				time.Until(until).Round(time.Second))
		}
	}
	var cmd messages.Command = rawCommand{kind: dl.Kind, body: dl.Body}
	if typed, ok := messages.NewCommand(dl.Kind); ok && messages.Decode(dl.Body, typed) == nil {
		cmd = typed // a kind of the contract: its fingerprint is checked as any command's
	}
	return c.Send(ctx, dl.Key, cmd)
}

// PurgeDeadLetters deletes every dead letter of key and returns how many.
// The key's record is untouched: it keeps no outcome, so it can still be
// sent again.
func (c *Client) PurgeDeadLetters(ctx context.Context, key string) (int, error) {
	dls, err := c.DeadLettersOf(ctx, key)
	if err != nil {
		return 0, err
	}
	stream, err := c.js.Stream(ctx, c.cfg.Topology.DeadLetterStream)
	if err != nil {
		return 0, err
	}
	for i, dl := range dls {
		if err := stream.DeleteMsg(ctx, dl.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return i, fmt.Errorf("client: delete dead letter %d: %w", dl.Sequence, err)
		}
	}
	return len(dls), nil
}

func (c *Client) dedupeWindow(ctx context.Context) (time.Duration, error) {
	s, err := c.js.Stream(ctx, c.cfg.Topology.CommandStream)
	if err != nil {
		return 0, err
	}
	return s.CachedInfo().Config.Duplicates, nil
}

// rawCommand is a command of a kind this client does not know (a custom
// operation's), replayed as the bytes it was. Its fingerprint is unknown
// here, so a stored outcome is compared by kind only.
type rawCommand struct {
	kind string
	body []byte
}

func (r rawCommand) Kind() string                 { return r.kind }
func (r rawCommand) Validate() error              { return nil }
func (r rawCommand) MarshalJSON() ([]byte, error) { return r.body, nil }
func (r rawCommand) fingerprint() string          { return "" }
