/// The life of a job: `queued → planning → running → stitching → done`, or `failed` / `cancelled`.
package enum JobState: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    case queued, planning, personalising, running, stitching, done, failed, cancelled

    package var description: String { rawValue }

    /// Whether the job will never change state again on its own.
    package var isTerminal: Bool { self == .done || self == .failed || self == .cancelled }

    /// Whether `self → next` is a legal transition.
    package func canTransition(to next: JobState) -> Bool {
        switch (self, next) {
        case (.queued, .planning), (.planning, .running), (.running, .stitching), (.stitching, .done):
            return true
        // A job that asked for personalisation fine-tunes the model on its own footage between
        // planning and dispatch (`submit --personalise`).
        case (.planning, .personalising), (.personalising, .running):
            return true
        // A coordinator that died mid-step redoes the step from its start.
        case (.planning, .queued), (.stitching, .running):
            return true
        case (_, .failed), (_, .cancelled):
            return !isTerminal
        // `retry` puts a failed or cancelled job back in the queue.
        case (.failed, .queued), (.cancelled, .queued):
            return true
        default:
            return false
        }
    }
}

/// The life of a segment: `pending → leased → done`; a failed attempt goes back to `pending`
/// with a backoff until its attempts are spent, then `dead`.
package enum SegmentState: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    case pending, leased, done, dead, cancelled
    package var description: String { rawValue }
}
