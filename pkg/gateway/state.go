package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of the gateway's state bucket.
const (
	// StateBucketDefault is the JetStream key-value bucket the gateway
	// keeps what it must know across replicas and restarts in.
	StateBucketDefault = "idempay_gateway"
	// StateTTLDefault is how long a record is kept: as long as an outcome
	// (the contract's RESULT_TTL default).
	StateTTLDefault = 24 * time.Hour
	// stateMaxBytes bounds the bucket. Records are written only for 202s
	// and refusals, a few hundred bytes each; a full bucket refuses new
	// records (logged), and the answers fall back to the cautious ones.
	stateMaxBytes = 256 << 20
)

// stateStore is the gateway's memory that is not in one process: a small
// JetStream key-value bucket, which any replica reads and which outlives a
// restart. It holds two kinds of records, each under the operation's key:
//
//   - a.<key>: the command was accepted (202): its message's sequence,
//     kind and fingerprint. GET /v1/results/{key} answers 202 pending
//     while that message is still in the command stream, and never 404
//     for it.
//   - e.<key>.<seq>: message seq of the key was refused (rejected, with
//     code and fingerprint, as its answer said). A repeat that JetStream
//     drops as a duplicate of message seq is answered from it.
//
// Why a KV bucket, not a stream of its own or the command stream: the
// command stream is a work queue whose messages go away once answered,
// and neither it nor the result stream is indexed by key for a command
// without an outcome. A bucket is a stream with per-key last-value reads
// (direct get), works on nats-server 2.9 (a bucket-wide MaxAge, no
// per-message TTL), and needs no new server. It is written only off the
// hot path: a 201 writes nothing.
type stateStore struct {
	js       jetstream.JetStream
	bucket   string
	ttl      time.Duration
	replicas int

	mu sync.Mutex
	kv jetstream.KeyValue
}

// acceptedRecord is an a.<key> record.
type acceptedRecord struct {
	Seq         uint64 `json:"seq"`
	Kind        string `json:"kind"`
	Fingerprint string `json:"fingerprint"`
}

// endedRecord is an e.<key>.<seq> record: message seq's rejection.
type endedRecord struct {
	Code        string `json:"code"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

// errNoBucket: the bucket does not exist (yet): nothing was recorded.
var errNoBucket = errors.New("gateway: no state bucket yet")

// bucketFor returns the bucket, creating it when create is true and it
// does not exist. Without create, a missing bucket is errNoBucket.
func (s *stateStore) bucketFor(ctx context.Context, create bool) (jetstream.KeyValue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kv != nil {
		return s.kv, nil
	}
	kv, err := s.js.KeyValue(ctx, s.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) && create {
		kv, err = s.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      s.bucket,
			Description: "idempay gateway: accepted commands and refusals, by operation key",
			History:     1,
			TTL:         s.ttl,
			MaxBytes:    stateMaxBytes,
			Storage:     jetstream.FileStorage,
			Replicas:    s.replicas,
		})
		if errors.Is(err, jetstream.ErrBucketExists) { // another gateway made it first
			kv, err = s.js.KeyValue(ctx, s.bucket)
		}
	}
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return nil, errNoBucket
	case err != nil:
		return nil, fmt.Errorf("state bucket %s: %w", s.bucket, err)
	}
	s.kv = kv
	return kv, nil
}

func (s *stateStore) put(ctx context.Context, key string, v any) error {
	kv, err := s.bucketFor(ctx, true)
	if err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("state bucket %s: put %s: %w", s.bucket, key, err)
	}
	return nil
}

// get reads key into v; false when there is no such record.
func (s *stateStore) get(ctx context.Context, key string, v any) (bool, error) {
	kv, err := s.bucketFor(ctx, false)
	switch {
	case errors.Is(err, errNoBucket):
		return false, nil
	case err != nil:
		return false, err
	}
	e, err := kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("state bucket %s: get %s: %w", s.bucket, key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return false, fmt.Errorf("state bucket %s: record %s: %w", s.bucket, key, err)
	}
	return true, nil
}

func acceptedKey(op string) string          { return "a." + op }
func endedKey(op string, seq uint64) string { return "e." + op + "." + strconv.FormatUint(seq, 10) }

func (s *stateStore) putAccepted(ctx context.Context, op string, r acceptedRecord) error {
	return s.put(ctx, acceptedKey(op), r)
}

func (s *stateStore) accepted(ctx context.Context, op string) (acceptedRecord, bool, error) {
	var r acceptedRecord
	found, err := s.get(ctx, acceptedKey(op), &r)
	return r, found, err
}

func (s *stateStore) putEnded(ctx context.Context, op string, seq uint64, r endedRecord) error {
	return s.put(ctx, endedKey(op, seq), r)
}

func (s *stateStore) ended(ctx context.Context, op string, seq uint64) (endedRecord, bool, error) {
	var r endedRecord
	found, err := s.get(ctx, endedKey(op, seq), &r)
	return r, found, err
}
