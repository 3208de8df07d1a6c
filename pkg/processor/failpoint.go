package processor

// Failpoint names a step of a delivery, for Config.Failpoint.
type Failpoint string

// The steps of a delivery at which a crash can be injected, in order.
const (
	AfterLock           Failpoint = "after_lock"             // mutex held, record untouched
	AfterBegin          Failpoint = "after_begin"            // attempt counted, operation not called
	AfterOperation      Failpoint = "after_operation"        // operation done (provider charged), nothing stored
	AfterCommit         Failpoint = "after_commit"           // outcome stored, not published
	AfterPublish        Failpoint = "after_publish"          // outcome published, message not acked
	AfterDeadLetterCopy Failpoint = "after_dead_letter_copy" // copy in the dead letters, key not condemned
)

// Failpoints lists every Failpoint in delivery order.
var Failpoints = []Failpoint{AfterLock, AfterBegin, AfterOperation, AfterCommit, AfterPublish, AfterDeadLetterCopy}
