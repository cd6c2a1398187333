/// Group commit: requests that arrive while a batch is being committed wait, and go together in
/// the next batch.
///
/// Under light load every request is a batch of one and waits for nothing extra; under heavy
/// load the batches grow by themselves, so the fixed cost of a commit (a database round trip,
/// `BEGIN`/`COMMIT`, a lock) is shared by all the requests that queued behind the last one.
/// `commit` returns one reply per request, in order; when it throws, every request of that batch
/// gets the error.
public actor GroupCommit<Request: Sendable, Reply: Sendable> {
    public typealias Commit = @Sendable ([Request]) async throws -> [Reply]

    private struct Waiting {
        var request: Request
        var continuation: CheckedContinuation<Reply, any Error>
    }

    private let commit: Commit
    private let maxBatch: Int
    private var queue: [Waiting] = []
    private var committing = false
    /// Batches committed so far, and the requests in them (for benchmarks and tests).
    public private(set) var batches = 0
    public private(set) var requests = 0
    /// Requests waiting for the next batch.
    public var waiting: Int { queue.count }

    /// - Parameter maxBatch: the most requests committed together (at least 1).
    public init(maxBatch: Int = 64, commit: @escaping Commit) {
        self.maxBatch = max(1, maxBatch)
        self.commit = commit
    }

    /// Queues `request` for the next batch and returns its reply once that batch is committed.
    public func submit(_ request: Request) async throws -> Reply {
        try await withCheckedThrowingContinuation { continuation in
            queue.append(Waiting(request: request, continuation: continuation))
            if !committing {
                committing = true
                Task { await self.drain() }
            }
        }
    }

    private func drain() async {
        while !queue.isEmpty {
            let batch = Array(queue.prefix(maxBatch))
            queue.removeFirst(batch.count)
            batches += 1
            requests += batch.count
            do {
                let replies = try await commit(batch.map(\.request))
                guard replies.count == batch.count else {
                    throw DubfarmError(.internalError, "a group commit of \(batch.count) requests returned \(replies.count) replies")
                }
                for (w, reply) in zip(batch, replies) { w.continuation.resume(returning: reply) }
            } catch {
                for w in batch { w.continuation.resume(throwing: error) }
            }
        }
        committing = false
    }
}
