package dedupe

import "errors"

var (
	// ErrLocked means another worker holds the key's mutex. The caller should
	// retry later (NakWithDelay), not wait.
	ErrLocked = errors.New("dedupe: key is locked by another worker")
	// ErrLockLost means the caller no longer holds the key's mutex: it
	// expired or was taken over. Nothing was written.
	ErrLockLost = errors.New("dedupe: lock lost")
	// ErrFingerprintMismatch means the record is in progress with another
	// fingerprint than the one committed. Nothing was written.
	ErrFingerprintMismatch = errors.New("dedupe: record holds another fingerprint")
)
