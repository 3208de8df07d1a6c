package messages

import "fmt"

// RejectError is why a message was refused: a rejection code of the contract
// and a human message. Workers turn it into a rejected answer; clients turn a
// rejected answer back into one, so errors.Is works on both sides.
type RejectError struct {
	// Code is one of the Code* constants.
	Code string
	// Message explains the code, naming the offending field where there is one.
	Message string
}

func (e *RejectError) Error() string {
	if e.Message == "" {
		return "rejected: " + e.Code
	}
	return fmt.Sprintf("rejected: %s: %s", e.Code, e.Message)
}

// Is reports whether target is a *RejectError with the same code, so that
// errors.Is(err, ErrKeyReused) works whatever the message.
func (e *RejectError) Is(target error) bool {
	t, ok := target.(*RejectError)
	return ok && t.Code == e.Code
}

// Sentinel rejections, one per code, for errors.Is.
var (
	// ErrInvalidKey: the Nats-Msg-Id header is missing or not a canonical UUID.
	ErrInvalidKey = &RejectError{Code: CodeInvalidKey}
	// ErrInvalidPayload: the body is not a valid command of its type.
	ErrInvalidPayload = &RejectError{Code: CodeInvalidPayload}
	// ErrUnknownCommand: no operation is registered for the subject's type.
	ErrUnknownCommand = &RejectError{Code: CodeUnknownCommand}
	// ErrPayloadTooLarge: the body is larger than MaxBodySize.
	ErrPayloadTooLarge = &RejectError{Code: CodePayloadTooLarge}
	// ErrKeyReused: the key is bound to another command or payload.
	ErrKeyReused = &RejectError{Code: CodeKeyReused}
	// ErrDeadLettered: the command exhausted its deliveries and was copied to
	// the dead letters; it certainly did not take effect. The key keeps no
	// outcome and may be sent again (unless it was voided).
	ErrDeadLettered = &RejectError{Code: CodeDeadLettered}
	// ErrOutcomeUnknown (v1.2): the command was dead-lettered while a call
	// may have taken effect. Not a failure: the outcome is not known yet.
	// Send it again with the same key (never a new one) to learn it.
	ErrOutcomeUnknown = &RejectError{Code: CodeOutcomeUnknown}
)

func invalidPayload(msg string) error {
	return &RejectError{Code: CodeInvalidPayload, Message: msg}
}
