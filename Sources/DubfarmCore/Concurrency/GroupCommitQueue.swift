/// Group commit, as pure state: requests that arrive while a batch is being committed wait, and
/// go together in the next batch.
///
/// Under light load every request is a batch of one and waits for nothing extra; under heavy
/// load the batches grow by themselves, so the fixed cost of a commit (a database round trip,
/// `BEGIN`/`COMMIT`, a file flush) is shared by all the requests that queued behind the last one.
///
/// The owner, an actor, keeps one of these and drives it on its own executor: ``submit(_:_:)``
/// each request with whatever it resumes later (a continuation); when that returns `true`, no
/// commit is in flight and the owner starts a drain: ``nextBatch()``, commit it, answer every
/// waiter of the batch, and again until ``nextBatch()`` returns `nil`. Keeping the loop in the
/// owner (rather than in an actor of its own calling back a closure) is what guarantees that
/// batching and committing cost no thread hop beyond the commit's own.
package struct GroupCommitQueue<Request, Waiter> {
    /// The most requests committed together.
    package let maxBatch: Int
    private var queue: [(request: Request, waiter: Waiter)] = []
    /// Whether a drain is running (between a `submit` that returned `true` and the `nextBatch`
    /// that returned `nil`).
    package private(set) var committing = false
    /// Batches handed out so far, and the requests in them (for benchmarks and tests).
    package private(set) var batches = 0
    package private(set) var requests = 0

    /// - Parameter maxBatch: the most requests committed together (at least 1).
    package init(maxBatch: Int = 64) {
        self.maxBatch = max(1, maxBatch)
    }

    /// Requests waiting for the next batch.
    package var waiting: Int { queue.count }

    /// Queues `request`; returns `true` when the caller must start a drain (none is running).
    package mutating func submit(_ request: Request, _ waiter: Waiter) -> Bool {
        queue.append((request, waiter))
        guard !committing else { return false }
        committing = true
        return true
    }

    /// The next batch, oldest first, at most ``maxBatch`` long; `nil` when nothing waits, which
    /// ends the drain (the next ``submit(_:_:)`` starts another).
    package mutating func nextBatch() -> [(request: Request, waiter: Waiter)]? {
        guard !queue.isEmpty else {
            committing = false
            return nil
        }
        let batch = Array(queue.prefix(maxBatch))
        queue.removeFirst(batch.count)
        batches += 1
        requests += batch.count
        return batch
    }
}
